"""The export's quality gate: every shipped quantized variant at or above its recipe's floor, or nothing is written."""

from __future__ import annotations

from ..errors import PrepError
from ..recipes import Floor


class BelowQualityFloor(PrepError):
    """A shipped variant scores below its recipe's floor against torch: the export is refused."""


def failures(report: dict, floor: Floor, shipped: tuple[str, ...]) -> list[str]:
    """One line per shipped variant (fp32 aside: verify.check_fp32 holds it to torch itself) below `floor`."""
    reference = report["reference"]["perplexity"]
    lines = []
    for dtype, v in report["variants"].items():
        if dtype == "fp32" or dtype not in shipped:
            continue
        ratio = v["perplexity"] / reference
        if not v["top1_agreement"] >= floor.min_top1:  # NaN scores fail
            lines.append(f"{dtype}: top-1 {v['top1_agreement']:.1%} < {floor.min_top1:.1%}")
        if not ratio <= floor.max_perplexity_ratio:
            lines.append(
                f"{dtype}: perplexity {v['perplexity']:.3f} is {ratio - 1:+.1%} of torch's {reference:.3f} "
                f"(at most {floor.max_perplexity_ratio - 1:+.1%})"
            )
    return lines


def require_floor(report: dict, floor: Floor, shipped: tuple[str, ...], recipe_id: str) -> None:
    lines = failures(report, floor, shipped)
    if lines:
        raise BelowQualityFloor(
            f"{recipe_id}: {'; '.join(lines)}. The quantized variants are below the recipe's floor against torch; "
            "nothing was written (verification.json's figures are printed above)"
        )


def floor_report(floor: Floor) -> dict:
    return {"min_top1": floor.min_top1, "max_perplexity_ratio": floor.max_perplexity_ratio}
