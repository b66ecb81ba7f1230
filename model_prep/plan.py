"""What an export builds, one row per variant: the ONNX dtypes and the GGUF alike, each with its writer, its scorer,
the floor it is held to and what it adds to the manifest. run_recipe and `model_prep verify` walk the same table.

Writers and scorers run their heavy part in child processes (isolated.py): what torch, protobuf and glibc keep after
one step would otherwise stack under the next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_contracts import LLAMA_CPP

from .errors import PrepError
from .export.gguf import write_gguf
from .families import FAMILIES
from .families.family import Family
from .folder import SUFFIX, graphs_in
from .isolated import run_isolated
from .quantize.variants import write_variants
from .recipes import Floor, Recipe
from .verify import gguf, quality
from .verify.text import Fidelity

# Every ONNX variant the quantizers make (`--all-variants` builds them all, for the bench).
ALL_VARIANTS = ("fp32", "q8", "q4", "q4f16")


@dataclass(frozen=True)
class Job:
    """What every writer and scorer of one model reads."""

    recipe: Recipe
    family: Family
    source_dir: Path
    folder: Path  # the model folder: being written, or re-verified
    source_gguf: Path | None = None  # the GGUF the source came from, where it did (its grid is recovered)


@dataclass(frozen=True)
class Written:
    """One variant's files: {sub-model: path} (a GGUF: {"gguf": path}), and what its writer adds to the report."""

    files: dict[str, Path]
    report: dict[str, Any] = field(default_factory=dict)

    def relative(self, folder: Path) -> list[str]:
        return [p.relative_to(folder).as_posix() for p in self.files.values()]


@dataclass(frozen=True)
class Kind:
    """How one kind of variant is written, found again in a finished folder, scored against torch, and described in
    the manifest (`manifest`: its dtype entry's fields beyond files and bytes, from its score)."""

    write: Callable[[Job, dict[str, Path], str], Written]
    find: Callable[[Job, str, tuple[str, ...]], Written]
    score: Callable[[Job, Written, str, Any], Fidelity]
    entry: Callable[[Variant, Written, Fidelity], dict[str, Any]]  # its line in verification.json
    manifest: Callable[[Fidelity], dict[str, str]]


@dataclass(frozen=True)
class Variant:
    dtype: str
    kind: Kind
    floor: Floor | None  # None: not held to a floor (fp32 is held to torch itself; variants no device loads)
    shipped: bool  # written to the model folder and its manifest


def _write_onnx(job: Job, fp32: dict[str, Path], dtype: str) -> Written:
    if dtype == "fp32":
        return Written(fp32)
    graphs = run_isolated(write_variants, fp32, (dtype,), job.folder / "onnx", job.recipe.q4_block_size)
    return Written(graphs[dtype])


def _find_onnx(job: Job, dtype: str, files: tuple[str, ...]) -> Written:
    return Written(graphs_in(job.folder, dtype, files))


def _score_onnx(job: Job, written: Written, dtype: str, reference: Any) -> Fidelity:
    return run_isolated(job.family.score_variant, written.files, dtype, reference)


def _write_gguf(job: Job, _fp32: dict[str, Path], dtype: str) -> Written:
    """llama.cpp's file, from the same source weights (the GGUF source's grid where there is one)."""
    plan = job.recipe.gguf
    assert plan is not None and plan.dtype == dtype
    path = job.folder / plan.path
    out = run_isolated(write_gguf, job.source_dir, path, plan, job.recipe.name, job.source_gguf)
    return Written({"gguf": out.path}, {"bytes": out.bytes, "tensor_types": out.types, "source_grid": out.grid_match})


def _find_gguf(job: Job, _dtype: str, files: tuple[str, ...]) -> Written:
    (path,) = files
    return Written({"gguf": job.folder / path})


def _score_gguf(job: Job, written: Written, dtype: str, reference: Any) -> Fidelity:
    """Native llama.cpp, scored like the ONNX variants, with the KV cache type the browser will run."""
    return run_isolated(gguf.score_gguf, written.files["gguf"], dtype, reference, job.source_dir)


def _onnx_entry(_variant: Variant, _written: Written, score: Fidelity) -> dict[str, Any]:
    return asdict(score)


def _gguf_entry(variant: Variant, written: Written, score: Fidelity) -> dict[str, Any]:
    assert variant.floor is not None  # a GGUF is always held to a floor (variants_of)
    return {**asdict(score), "runtime": LLAMA_CPP, **written.report, "floor": quality.floor_report(variant.floor)}


ONNX = Kind(write=_write_onnx, find=_find_onnx, score=_score_onnx, entry=_onnx_entry, manifest=lambda _score: {})
GGUF = Kind(
    write=_write_gguf,
    find=_find_gguf,
    score=_score_gguf,
    entry=_gguf_entry,
    manifest=lambda score: {"runtime": LLAMA_CPP, "kv_cache": score.kv_cache},  # type: ignore[attr-defined]
)


def check_recipe(recipe: Recipe) -> None:
    """The recipe's family and variants, checked before anything is downloaded or built."""
    if recipe.family not in FAMILIES:
        raise PrepError(
            f"recipe {recipe.id!r} names unknown model family {recipe.family!r}: one of {', '.join(FAMILIES)}"
        )
    unknown = [d for d in recipe.variants if d not in ALL_VARIANTS]
    if unknown:
        raise PrepError(f"recipe {recipe.id!r}: no writer for variant(s) {unknown}: {', '.join(ALL_VARIANTS)}")
    if "fp32" not in recipe.variants:
        raise PrepError(f"recipe {recipe.id!r}: fp32 must be built, every export is checked against torch with it")
    built = {*recipe.variants, *([recipe.gguf.dtype] if recipe.gguf else [])}
    orphans = {device: d for device, d in recipe.devices.items() if d not in built}
    if orphans:
        raise PrepError(f"recipe {recipe.id!r}: devices {orphans} name variants it does not build ({sorted(built)})")


def variants_of(recipe: Recipe, all_variants: bool = False) -> list[Variant]:
    """The table of one export: the ONNX dtypes in build order, then the GGUF. `all_variants`: build and ship every
    ONNX variant (ALL_VARIANTS), not only the recipe's for its devices: benchmarks compare them."""
    onnx = tuple(dict.fromkeys((*recipe.variants, *ALL_VARIANTS))) if all_variants else recipe.variants
    gated = recipe.shipped_variants()  # the floor holds the variants a device loads by default
    rows = [
        Variant(d, ONNX, recipe.floor if d in gated and d != "fp32" else None, all_variants or d in gated) for d in onnx
    ]
    if recipe.gguf:  # held to its own floor where llama.cpp's arithmetic cannot reach the recipe's
        rows.append(Variant(recipe.gguf.dtype, GGUF, recipe.gguf.floor or recipe.floor, True))
    return rows


def kind_of(dtype: str) -> Kind:
    """The kind of a dtype a manifest lists: its ONNX suffix, or a GGUF."""
    if dtype in SUFFIX:
        return ONNX
    if dtype.startswith("gguf-"):
        return GGUF
    raise PrepError(f"no scorer for dtype {dtype!r}")
