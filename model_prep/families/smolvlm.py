"""SmolVLM / Idefics3: vision_encoder + embed_tokens + decoder_model_merged, scored with a fixed image too."""

from ..export.smolvlm import export_smolvlm
from ..verify import vlm
from .family import Family


def report(reference: vlm.VLMReference) -> dict:
    return {"image": vlm.image_report(reference)}


SMOLVLM = Family(
    name="smolvlm",
    export=export_smolvlm,
    torch_reference=vlm.torch_reference,
    score_variant=vlm.score_variant,
    report=report,
)
