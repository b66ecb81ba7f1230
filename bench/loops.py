"""Does a chat reply loop? A reply loops when it keeps saying the same thing: the words covered by a repeated
phrase (a 4-word n-gram that occurs at least 3 times) make up more than 30 % of it, or it ran to max_new_tokens
and its second half is mostly such repeats. Everyday replies (lists, recipes, emails) stay far below that; the
loops FACTS.md records ("A muted hue," until max_new_tokens, "Stay inspired" 250 times) are far above it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

N = 4  # words per phrase
MIN_REPEATS = 3  # a phrase said this often is a repeat
LOOP_COVERAGE = 0.30  # more of the reply than this in repeats: a loop
TAIL_COVERAGE = 0.50  # the second half of a reply cut off by max_new_tokens


@dataclass(frozen=True)
class LoopCheck:
    words: int
    coverage: float  # share of words inside a repeated phrase
    tail_coverage: float  # the same over the second half
    top_phrase: str  # the most repeated phrase, and how often
    top_count: int

    def loops(self, hit_max_new_tokens: bool) -> bool:
        return self.coverage > LOOP_COVERAGE or (hit_max_new_tokens and self.tail_coverage > TAIL_COVERAGE)


def check(text: str) -> LoopCheck:
    words = text.split()
    grams = [tuple(w.lower().strip(".,;:!?*-\"'") for w in words[i : i + N]) for i in range(len(words) - N + 1)]
    counts = Counter(grams)
    covered = [False] * len(words)
    for i, gram in enumerate(grams):
        if counts[gram] >= MIN_REPEATS:
            for j in range(i, i + N):
                covered[j] = True
    half = len(words) // 2
    top, top_count = counts.most_common(1)[0] if counts else ((), 0)
    return LoopCheck(
        words=len(words),
        coverage=sum(covered) / len(words) if words else 0.0,
        tail_coverage=sum(covered[half:]) / (len(words) - half) if len(words) - half > 0 else 0.0,
        top_phrase=" ".join(top),
        top_count=top_count,
    )
