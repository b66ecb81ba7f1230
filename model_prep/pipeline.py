"""recipe → source → export → quantize → verify → layout, with a progress line and timing per stage."""

import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import layout, quantize, verify, verify_vlm
from .export_decoder import export_decoder
from .export_smolvlm import export_smolvlm
from .isolated import run_isolated
from .recipes import Recipe
from .sources import resolve_source

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
    if recipe.exporter not in ("decoder", "smolvlm"):
        raise ValueError(f"recipe {recipe.id!r} names an unknown exporter {recipe.exporter!r}")
    vlm = recipe.exporter == "smolvlm"
    tmp = layout.start_folder(models_dir, recipe)
    try:
        onnx_dir = tmp / "onnx"
        # {sub-model: fp32 graph}: `model` for a text decoder; vision_encoder, embed_tokens and decoder_model_merged
        # for SmolVLM. Every sub-model is quantized to every dtype of the recipe.
        # Each heavy stage runs in a child process: what torch, protobuf and glibc keep after a stage would
        # otherwise stack under the next one (Qwen3-0.6B: 9.3 GB peak in-process).
        with stage("export", timings):
            fp32 = run_isolated(export_smolvlm if vlm else export_text, source_dir, onnx_dir)
        with stage("quantize", timings):
            graphs = run_isolated(write_variants, fp32, recipe.variants, onnx_dir, recipe.q4_block_size)
        with stage("verify", timings):
            # torch in a child process, then each variant's onnxruntime session in its own: never two models in
            # memory at once. torch's logits go to disk and are read back a chunk at a time.
            logits_dir = tmp / "reference-logits"
            checker = verify_vlm if vlm else verify
            reference = run_isolated(checker.torch_reference, source_dir, recipe.verify_prompts, logits_dir)
            results = [
                run_isolated(checker.score_variant, paths if vlm else paths["model"], d, reference)
                for d, paths in graphs.items()
            ]
            shutil.rmtree(logits_dir)
            verify.check_fp32(next(r for r in results if r.dtype == "fp32"))
            report = verify.as_report(reference, results)
            if vlm:
                report["image"] = verify_vlm.image_report(reference)
            (tmp / "verification.json").write_text(json.dumps(report, indent=2))
            print_report(report)
        with stage("write", timings):
            # fp32 is always built and checked against torch; it ships only where a device loads it.
            shipped = recipe.shipped_variants()
            if "fp32" not in shipped:
                for path in fp32.values():
                    for file in (path, path.with_suffix(".onnx_data")):
                        file.unlink(missing_ok=True)
            layout.copy_configs(source_dir, tmp)
            layout.write_sampling_defaults(tmp, recipe)
            dtype_files = {
                d: [p.relative_to(tmp).as_posix() for p in paths.values()]
                for d, paths in graphs.items()
                if d in shipped
            }
            manifest = layout.build_manifest(tmp, recipe, dtype_files, source or recipe.source)
            final = layout.finish_folder(tmp, manifest, models_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(timings.values())
    print(f"{recipe.id}: revision {manifest['revision']} in {final} ({total:.1f} s)", file=sys.stderr)
    return final


def export_text(source_dir: Path, onnx_dir: Path) -> dict[str, Path]:
    return {"model": export_decoder(source_dir, onnx_dir)}


def write_variants(
    fp32: dict[str, Path], dtypes: tuple[str, ...], onnx_dir: Path, block_size: int
) -> dict[str, dict[str, Path]]:
    """{dtype: {sub-model: graph}}: every sub-model quantized to every dtype."""
    return {
        d: {name: quantize.write_variant(path, d, onnx_dir, block_size) for name, path in fp32.items()} for d in dtypes
    }


def print_report(report: dict, out=sys.stderr) -> None:
    print(f"  reference perplexity (torch fp32): {report['reference']['perplexity']:.2f}", file=out)
    print(f"  {'dtype':<7} {'top-1':>7} {'cosine':>9} {'ppl':>8}", file=out)
    for v in report["variants"].values():
        print(
            f"  {v['dtype']:<7} {v['top1_agreement']:>7.1%} {v['mean_logit_cosine']:>9.5f} {v['perplexity']:>8.2f}",
            file=out,
        )
