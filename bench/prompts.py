"""The fixed prompt set every runner measures: a short chat turn and a 512-token one, 128 new tokens each."""

from pathlib import Path

NEW_TOKENS = 128
LONG_PROMPT_TOKENS = 512
_TEXT = (Path(__file__).resolve().parents[1] / "model_prep" / "data" / "natural_text.txt").read_text()

SHORT = "What is the capital of France?"


def long_prompt(tokenizer) -> str:
    """A summarisation request whose chat-templated prompt is about LONG_PROMPT_TOKENS tokens long."""
    words = (_TEXT + " ") * 4
    lo, hi = 0, len(words)
    while hi - lo > 8:  # binary search on characters: the tokenizer decides the count
        mid = (lo + hi) // 2
        n = len(tokenizer.apply_chat_template(_messages(words[:mid]), add_generation_prompt=True))
        lo, hi = (mid, hi) if n <= LONG_PROMPT_TOKENS else (lo, mid)
    return _ask(words[:lo])


def _ask(text: str) -> str:
    return f"Summarize this text in three sentences.\n\n{text}"


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": _ask(text)}]


def prompt_set(tokenizer) -> dict[str, str]:
    return {"short": SHORT, "long512": long_prompt(tokenizer)}
