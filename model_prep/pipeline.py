"""recipe → source → export → quantize → verify → write, with a progress line and timing per stage."""

import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import layout
from .families import get_family
from .folder import VERIFICATION
from .isolated import run_isolated
from .plan import Job, check_recipe, variants_of
from .recipes import Recipe
from .sources.resolve import public_source, resolve_source, source_gguf_file
from .verify import report as verification

STAGES = ("source", "export", "quantize", "verify", "write")


@contextmanager
def stage(name: str, timings: dict[str, float], out=sys.stderr) -> Iterator[None]:
    index = STAGES.index(name) + 1
    print(f"[{index}/{len(STAGES)}] {name} …", file=out, flush=True)
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    print(f"[{index}/{len(STAGES)}] {name} done in {timings[name]:.1f} s", file=out, flush=True)


def run_recipe(
    recipe: Recipe,
    models_dir: Path,
    source: str | None = None,
    cache_dir: Path | None = None,
    all_variants: bool = False,
) -> Path:
    """Export `recipe` into `models_dir/<id>`: the source's fp32 graphs, every variant of plan.variants_of (the ONNX
    dtypes and the GGUF) written, scored against torch and gated (verify/report.py), then the folder and its
    manifest. `all_variants`: build and ship every ONNX variant, not only the recipe's for its devices."""
    check_recipe(recipe)  # family, variants and devices, before anything is downloaded
    family = get_family(recipe.family)
    variants = variants_of(recipe, all_variants)
    cache_dir = cache_dir or models_dir / ".cache"
    timings: dict[str, float] = {}
    with stage("source", timings):
        source_dir = resolve_source(recipe, source, cache_dir)
    tmp = layout.start_folder(models_dir, recipe)
    try:
        job = Job(recipe, family, source_dir, tmp, source_gguf_file(recipe, source, cache_dir))
        with stage("export", timings):  # {sub-model: fp32 graph} (families/family.Graphs)
            fp32 = run_isolated(family.export, source_dir, tmp / "onnx")
        with stage("quantize", timings):
            written = {v.dtype: v.kind.write(job, fp32, v.dtype) for v in variants}
        with stage("verify", timings):
            report = verification.verify(job, variants, written, tmp / "reference-logits")
            verification.print_report(report.as_json())
            report.gate()
            report.write(tmp / VERIFICATION)
        with stage("write", timings):
            # fp32 is always built and checked against torch; it ships only where a device loads it.
            for v in variants:
                if v.dtype == "fp32" and not v.shipped:
                    for path in written[v.dtype].files.values():
                        for file in (path, path.with_suffix(".onnx_data")):
                            file.unlink(missing_ok=True)
            layout.copy_configs(source_dir, tmp)
            layout.write_sampling_defaults(tmp, recipe)
            shipped = [v for v in variants if v.shipped]
            dtype_files = {v.dtype: written[v.dtype].relative(tmp) for v in shipped}
            fields = {v.dtype: v.kind.manifest(report.scores[v.dtype]) for v in shipped}
            settings = {d: f for d, f in fields.items() if f}
            manifest = layout.build_manifest(tmp, recipe, dtype_files, public_source(recipe, source), settings)
            final = layout.finish_folder(tmp, manifest, models_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(timings.values())
    print(f"{recipe.id}: revision {manifest.revision} in {final} ({total:.1f} s)", file=sys.stderr)
    return final
