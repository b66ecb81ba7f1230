"""One exception type per failure a user can act on; each message says what to do."""

import inspect
import re
from collections.abc import Callable
from types import ModuleType


class PrepError(Exception):
    """Base class: the CLI prints the message on one line and exits non-zero."""


class UnknownRecipe(PrepError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown recipe {name!r}: choose one of {', '.join(sorted(known))}")


class HubUnreachable(PrepError):
    def __init__(self, repo_id: str, detail: str) -> None:
        super().__init__(
            f"the Hugging Face hub is unreachable for {repo_id} ({detail}): "
            "pass --source PATH to a local checkpoint folder"
        )


class SourceMissing(PrepError):
    """The source folder, file or wheel does not exist or lacks what the recipe needs."""


class SourceCorrupt(PrepError):
    """The source exists but cannot be read as a model (truncated weights, bad config)."""


class UnsupportedArchitecture(PrepError):
    def __init__(self, found: str, expected: str, recipe: str) -> None:
        super().__init__(
            f"recipe {recipe!r} exports {expected}, but the source is {found}: "
            "pick the recipe that matches the checkpoint"
        )


class VerificationFailed(PrepError):
    """The fp32 graph does not match torch: the export is wrong and nothing is written."""


# The versions the patches of torch and transformers internals (export/tracing.py, sources/smolvlm_model.py) were
# written against: pyproject.toml pins them.
PINNED = {"torch": "2.13.0", "transformers": "4.57.6"}


class UpstreamChanged(PrepError):
    """A private torch or transformers symbol that the export patches or calls is gone or has another signature."""

    def __init__(self, symbol: str, detail: str, where: str) -> None:
        from importlib.metadata import version

        pinned = " / ".join(f"{name} {v}" for name, v in PINNED.items())
        installed = " / ".join(f"{name} {version(name)}" for name in PINNED)
        super().__init__(
            f"{symbol} {detail}: {where} was written for {pinned} (installed: {installed}); "
            "install the versions pyproject.toml pins, or update that code"
        )


def expect_parameters(owner: object, attr: str, expected: tuple[str, ...], where: str) -> Callable:
    """`owner.attr`, after checking it exists and takes exactly the parameters `expected` (by name, in order).

    pybind11 functions (torch._C) have no inspectable signature; theirs is read from the first docstring line."""
    symbol = f"{_qualified(owner)}.{attr}"
    fn = getattr(owner, attr, None)
    if fn is None:
        raise UpstreamChanged(symbol, "does not exist", where)
    try:
        found = tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        first_line = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        found = tuple(re.findall(r"[(,] ?\*{0,2}(\w+)(?::|,|\))", first_line.partition("->")[0]))
    if found != expected:
        raise UpstreamChanged(symbol, f"takes ({', '.join(found)}), not ({', '.join(expected)})", where)
    return fn


def _qualified(owner: object) -> str:
    if isinstance(owner, ModuleType):
        return owner.__name__
    cls = owner if isinstance(owner, type) else type(owner)
    return f"{cls.__module__}.{cls.__qualname__}"
