"""verification.json: every variant scored against torch, and the gates an export must pass to be written.

The report is printed before the gates run, so a refused export shows its figures.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..isolated import run_isolated
from ..recipes import Floor
from . import fp16_range, gguf, quality, text

# fp16 ONNX variants and the variant with the same nodes and fp32 activations whose values stand in for theirs.
FP16_SHADOWS = {"q4f16": "q4"}


@dataclass
class Report:
    recipe_id: str
    reference: Any  # the family's torch reference (text.Reference, vlm.VLMReference)
    floor: Floor  # the recipe's
    variants: list  # model_prep/plan.Variant rows (the verifier never imports the writers plan.py names)
    scores: dict[str, text.Fidelity]
    entries: dict[str, dict]  # {dtype: its verification.json line}
    fp16_range: dict[str, list[fp16_range.RangeReport]]
    extra: dict  # what the family adds (a VLM: the image)

    def as_json(self) -> dict:
        report = text.as_report(self.reference, [])
        report["variants"] = self.entries
        return {
            **report,
            **self.extra,
            "floor": quality.floor_report(self.floor),
            "fp16_range": {d: [r.as_dict() for r in rs] for d, rs in self.fp16_range.items()},
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_json(), indent=2))

    def gate(self) -> None:
        """fp32 against torch, every variant against its floor, the GGUF's tokenizer against tokenizer.json, every
        fp16 tensor inside fp16's range; raises the first gate's PrepError."""
        if "fp32" in self.scores:
            text.check_fp32(self.scores["fp32"])
        floors = list(dict.fromkeys(v.floor for v in self.variants if v.floor is not None))
        report = self.as_json()
        for floor in floors:
            held = tuple(v.dtype for v in self.variants if v.floor == floor)
            quality.require_floor(report, floor, held, self.recipe_id)
        for score in self.scores.values():
            if isinstance(score, gguf.GgufFidelity):
                gguf.require_tokenizer(score)
        for dtype, ranges in self.fp16_range.items():
            for r in ranges:
                fp16_range.require(r, dtype)


def verify(job: Any, variants: list, written: dict[str, Any], logits_dir: Path) -> Report:
    """Every variant of plan.variants_of (`written`: {dtype: plan.Written}) scored against torch, as plan.Job `job`
    says. torch in a child process, then each variant's session in its own: never two models in memory at once.
    torch's logits go to `logits_dir` and are read back a chunk at a time; it is removed afterwards."""
    family = job.family
    try:
        reference = run_isolated(family.torch_reference, job.source_dir, job.recipe.verify_prompts, logits_dir)
        scores = {v.dtype: v.kind.score(job, written[v.dtype], v.dtype, reference) for v in variants}
        graphs = {v.dtype: written[v.dtype].files for v in variants}
        ranges = {
            dtype: run_isolated(fp16_range.check_graphs, graphs[dtype], graphs[shadow], reference)
            for dtype, shadow in FP16_SHADOWS.items()
            if dtype in graphs and shadow in graphs
        }
    finally:
        shutil.rmtree(logits_dir, ignore_errors=True)
    entries = {v.dtype: v.kind.entry(v, written[v.dtype], scores[v.dtype]) for v in variants}
    return Report(
        job.recipe.id, reference, job.recipe.floor, variants, scores, entries, ranges, family.report(reference)
    )


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
