"""recipe → source → export → quantize → verify → layout, with a progress line and timing per stage."""

import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import layout, quantize, verify
from .export_decoder import export_decoder
from .recipes import Recipe
from .sources import resolve_source
from .tied_weights import share_tied_embedding

STAGES = ("source", "export", "quantize", "verify", "write")


@contextmanager
def stage(name: str, timings: dict[str, float], out=sys.stderr) -> Iterator[None]:
    index = STAGES.index(name) + 1
    print(f"[{index}/{len(STAGES)}] {name} …", file=out, flush=True)
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    print(f"[{index}/{len(STAGES)}] {name} done in {timings[name]:.1f} s", file=out, flush=True)


def run_recipe(recipe: Recipe, models_dir: Path, source: str | None = None, cache_dir: Path | None = None) -> Path:
    cache_dir = cache_dir or models_dir / ".cache"
    timings: dict[str, float] = {}
    with stage("source", timings):
        source_dir = resolve_source(recipe, source, cache_dir)
    if recipe.exporter != "decoder":
        from .errors import UnsupportedArchitecture

        raise UnsupportedArchitecture(recipe.architecture, "a text decoder", recipe.id)
    tmp = layout.start_folder(models_dir, recipe)
    try:
        onnx_dir = tmp / "onnx"
        with stage("export", timings):
            fp32 = export_decoder(source_dir, onnx_dir)
        with stage("quantize", timings):
            graphs = {d: quantize.write_variant(fp32, d, onnx_dir, recipe.q4_block_size) for d in recipe.variants}
        with stage("verify", timings):
            reference = verify.torch_reference(source_dir, recipe.verify_prompts)
            results = [verify.score_variant(path, d, reference) for d, path in graphs.items()]
            verify.check_fp32(next(r for r in results if r.dtype == "fp32"))
            report = verify.as_report(reference, results)
            (tmp / "verification.json").write_text(json.dumps(report, indent=2))
            print_report(report)
        with stage("write", timings):
            if "fp32" not in recipe.variants:
                fp32.unlink()
            else:
                share_tied_embedding(fp32)
            layout.copy_configs(source_dir, tmp)
            dtype_files = {d: [p.relative_to(tmp).as_posix()] for d, p in graphs.items()}
            manifest = layout.build_manifest(tmp, recipe, dtype_files, source or recipe.source)
            final = layout.finish_folder(tmp, manifest, models_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(timings.values())
    print(f"{recipe.id}: revision {manifest['revision']} in {final} ({total:.1f} s)", file=sys.stderr)
    return final


def print_report(report: dict, out=sys.stderr) -> None:
    print(f"  reference perplexity (torch fp32): {report['reference']['perplexity']:.2f}", file=out)
    print(f"  {'dtype':<7} {'top-1':>7} {'cosine':>9} {'ppl':>8}", file=out)
    for v in report["variants"].values():
        print(
            f"  {v['dtype']:<7} {v['top1_agreement']:>7.1%} {v['mean_logit_cosine']:>9.5f} {v['perplexity']:>8.2f}",
            file=out,
        )
