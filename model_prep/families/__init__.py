"""Model families: what each kind of model brings to the pipeline (export, torch reference, scoring, report)."""

from .decoder import DECODER
from .family import Family
from .smolvlm import SMOLVLM

FAMILIES: dict[str, Family] = {f.name: f for f in (DECODER, SMOLVLM)}


def get_family(name: str) -> Family:
    """The family a recipe names (`Recipe.family`)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}: one of {', '.join(FAMILIES)}") from None
