"""Text decoders (Llama / SmolLM2, Qwen3): one merged graph `model`, scored on chat prompts and natural text."""

from pathlib import Path

from ..export.decoder_graph import export_decoder
from ..verify import text
from .family import Family, Graphs, nothing_to_add


def export(source: Path, onnx_dir: Path) -> Graphs:
    return {"model": export_decoder(source, onnx_dir)}


def score_variant(graphs: Graphs, dtype: str, reference: text.Reference) -> text.Fidelity:
    return text.score_variant(graphs["model"], dtype, reference)


DECODER = Family(
    name="decoder",
    export=export,
    torch_reference=text.torch_reference,
    score_variant=score_variant,
    report=nothing_to_add,
)
