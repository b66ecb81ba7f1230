"""Run a memory-hungry step in a child process, so that everything it allocated is gone when it returns.

The torch reference of Qwen3-0.6B holds a 2.4 GB fp32 model; freed in-process, torch's and glibc's allocators keep
much of it, and the onnxruntime sessions that follow would stack on top (9.4 GB peak). A spawned child returns
only its (pickled) result.
"""

import multiprocessing
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def run_isolated(fn: Callable[..., T], *args) -> T:
    """`fn(*args)` in a spawned process; its exceptions are re-raised here. `fn` must be importable."""
    with tempfile.TemporaryDirectory(prefix="model-prep-") as tmp:
        result_path = Path(tmp) / "result.pickle"
        context = multiprocessing.get_context("spawn")
        child = context.Process(target=_child, args=(fn, args, result_path), daemon=True)
        child.start()
        child.join()
        if not result_path.is_file():
            raise RuntimeError(f"{fn.__qualname__} died in its child process (exit code {child.exitcode})")
        with result_path.open("rb") as f:  # streamed: never the pickle and the objects at once
            ok, value = pickle.load(f)
    if not ok:
        raise value
    return value


def _child(fn: Callable, args: tuple, result_path: Path) -> None:
    try:
        outcome = (True, fn(*args))
    except BaseException as err:  # handed to the parent, which raises it
        try:
            pickle.loads(pickle.dumps(err))
        except Exception:  # an exception type that does not survive pickling keeps its message
            err = RuntimeError(f"{type(err).__name__}: {err}")
        outcome = (False, err)
    with result_path.open("wb") as f:
        pickle.dump(outcome, f, protocol=pickle.HIGHEST_PROTOCOL)
