"""The stage boundaries of model_prep, read from the source: who may import whom."""

import ast
from pathlib import Path

import pytest

from model_prep.families import FAMILIES
from model_prep.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "model_prep"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every model_prep module `path` imports (relative imports resolved, `from x import y` counted as x and x.y)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.startswith("model_prep")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules} for name, path in modules.items()}


def reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in edges[todo.pop()] - seen:
            seen.add(m)
            todo.append(m)
    return seen


@pytest.mark.parametrize("module", sorted(m for m in graph() if m.startswith("model_prep.verify")))
def test_the_verifier_never_imports_the_quantizer_or_the_exporter(module: str) -> None:
    edges = graph()
    assert edges, "no modules found: the test would pass on nothing"
    bad = sorted(m for m in reachable(module, edges) if m.startswith(("model_prep.quantize", "model_prep.export")))
    assert not bad, f"{module} imports {bad}"


def test_app_never_imports_model_prep() -> None:
    for path in (ROOT / "app").rglob("*.py"):
        assert not imports_of(path), path


def test_the_pipeline_never_names_a_family() -> None:
    source = (PACKAGE / "pipeline.py").read_text()
    strings = {n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not strings & set(FAMILIES), "pipeline.py branches on a family's name: ask the family instead"
    assert "get_family" in source


def test_every_recipe_names_a_known_family() -> None:
    assert {r.family for r in RECIPES.values()} <= set(FAMILIES)
