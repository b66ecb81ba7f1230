"""What a model family brings to the pipeline, so the pipeline never asks which family it runs."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..verify.text import Fidelity

# {sub-model: graph}: `model` for a text decoder; vision_encoder, embed_tokens and decoder_model_merged for SmolVLM.
Graphs = dict[str, Path]


@dataclass(frozen=True)
class Family:
    """Every function is a module-level one: the pipeline runs them in child processes, which pickle them by name."""

    name: str
    # (source folder, onnx folder) → the fp32 graphs, each already checked against torch where the family can.
    export: Callable[[Path, Path], Graphs]
    # (source folder, chat prompts, folder for torch's logits) → the reference every variant is scored against.
    torch_reference: Callable[[Path, tuple[str, ...], Path], Any]
    # (one dtype's graphs, dtype, reference) → that variant's fidelity.
    score_variant: Callable[[Graphs, str, Any], Fidelity]
    # reference → what this family adds to verification.json beside the scores.
    report: Callable[[Any], dict]


def nothing_to_add(_reference: Any) -> dict:
    return {}
