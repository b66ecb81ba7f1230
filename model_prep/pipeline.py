"""recipe → source → export → quantize → verify → layout, with a progress line and timing per stage."""

import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from edge_contracts import LLAMA_CPP

from . import layout
from .export.gguf import write_gguf
from .families import get_family
from .isolated import run_isolated
from .quantize.variants import write_variants
from .recipes import Recipe
from .sources.resolve import public_source, resolve_source, source_gguf_file
from .verify import fp16_range, gguf, quality, text

STAGES = ("source", "export", "quantize", "verify", "write")
ALL_VARIANTS = ("fp32", "q8", "q4", "q4f16")


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
    """`all_variants`: build and ship every ONNX variant (ALL_VARIANTS), not only the recipe's for its devices:
    benchmarks compare them."""
    cache_dir = cache_dir or models_dir / ".cache"
    variants = tuple(dict.fromkeys((*recipe.variants, *ALL_VARIANTS))) if all_variants else recipe.variants
    shipped = variants if all_variants else recipe.shipped_variants()
    timings: dict[str, float] = {}
    with stage("source", timings):
        source_dir = resolve_source(recipe, source, cache_dir)
    family = get_family(recipe.family)
    tmp = layout.start_folder(models_dir, recipe)
    try:
        onnx_dir = tmp / "onnx"
        # {sub-model: fp32 graph} (families/family.Graphs); every sub-model is quantized to every dtype of the recipe.
        # Each heavy stage runs in a child process: what torch, protobuf and glibc keep after a stage would
        # otherwise stack under the next one (Qwen3-0.6B: 9.3 GB peak in-process).
        with stage("export", timings):
            fp32 = run_isolated(family.export, source_dir, onnx_dir)
        with stage("quantize", timings):
            graphs = run_isolated(write_variants, fp32, variants, onnx_dir, recipe.q4_block_size)
            plan = recipe.gguf
            if plan:  # llama.cpp's file, from the same source weights (the GGUF source's grid where there is one)
                source_file = source_gguf_file(recipe, source, cache_dir)
                written = run_isolated(write_gguf, source_dir, tmp / plan.path, plan, recipe.name, source_file)
        with stage("verify", timings):
            # torch in a child process, then each variant's onnxruntime session in its own: never two models in
            # memory at once. torch's logits go to disk and are read back a chunk at a time.
            logits_dir = tmp / "reference-logits"
            reference = run_isolated(family.torch_reference, source_dir, recipe.verify_prompts, logits_dir)
            results = [run_isolated(family.score_variant, paths, d, reference) for d, paths in graphs.items()]
            if plan:  # native llama.cpp, scored like the ONNX variants
                scored = run_isolated(gguf.score_gguf, written.path, plan.dtype, reference, source_dir)
            shutil.rmtree(logits_dir)
            report = {**text.as_report(reference, results), **family.report(reference)}
            report["floor"] = quality.floor_report(recipe.floor)
            gguf_floor = (plan.floor or recipe.floor) if plan else None
            if plan:
                report["variants"][plan.dtype] = {
                    **asdict(scored),
                    "runtime": LLAMA_CPP,
                    "bytes": written.bytes,
                    "tensor_types": written.types,
                    "source_grid": written.grid_match,
                    "floor": quality.floor_report(gguf_floor),
                }
            ranges = fp16_ranges(graphs, reference)
            report["fp16_range"] = {d: [r.as_dict() for r in rs] for d, rs in ranges.items()}
            print_report(report)
            # The gates, after the report is printed so a failure shows its figures: fp32 against torch, every
            # shipped variant against the recipe's floor, every fp16 tensor inside fp16's range.
            text.check_fp32(next(r for r in results if r.dtype == "fp32"))
            quality.require_floor(report, recipe.floor, recipe.shipped_variants(), recipe.id)
            if plan:  # the GGUF against its own floor (llama.cpp's arithmetic differs), its tokenizer against ours
                quality.require_floor(report, gguf_floor, (plan.dtype,), recipe.id)
                gguf.require_tokenizer(scored)
            for dtype, rs in ranges.items():
                for r in rs:
                    fp16_range.require(r, dtype)
            (tmp / "verification.json").write_text(json.dumps(report, indent=2))
        with stage("write", timings):
            # fp32 is always built and checked against torch; it ships only where a device loads it.
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
            runtimes = {}
            if plan:
                dtype_files[plan.dtype] = [plan.path]
                runtimes[plan.dtype] = {"runtime": LLAMA_CPP, "kv_cache": scored.kv_cache}
            manifest = layout.build_manifest(tmp, recipe, dtype_files, public_source(recipe, source), runtimes)
            final = layout.finish_folder(tmp, manifest, models_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(timings.values())
    print(f"{recipe.id}: revision {manifest['revision']} in {final} ({total:.1f} s)", file=sys.stderr)
    return final


# fp16 variants and the variant with the same nodes and fp32 activations whose values stand in for theirs.
FP16_SHADOWS = {"q4f16": "q4", "fp16": "fp32"}


def fp16_ranges(graphs: dict[str, dict[str, Path]], reference) -> dict[str, list]:
    """{fp16 dtype: a RangeReport per sub-model} (verify/fp16_range.py), each in its own process."""
    return {
        dtype: run_isolated(fp16_range.check_graphs, graphs[dtype], graphs[shadow], reference)
        for dtype, shadow in FP16_SHADOWS.items()
        if dtype in graphs and shadow in graphs
    }


def print_report(report: dict, out=sys.stderr) -> None:
    print(f"  reference perplexity (torch fp32): {report['reference']['perplexity']:.2f}", file=out)
    print(f"  {'dtype':<10} {'top-1':>7} {'cosine':>9} {'ppl':>8}", file=out)
    for v in report["variants"].values():
        print(
            f"  {v['dtype']:<10} {v['top1_agreement']:>7.1%} {v['mean_logit_cosine']:>9.5f} {v['perplexity']:>8.2f}",
            file=out,
        )
    for dtype, ranges in report.get("fp16_range", {}).items():
        for r in ranges:
            print(
                f"  {dtype} {r['graph']}: {r['fp16_tensors_checked']} fp16 tensors, largest |x| "
                f"{r['largest_abs_value']:.4g} ({r['largest_tensor']}), limit {r['limit']:.0f}",
                file=out,
            )
