"""The Python twin of web/src/prompt-lookup.js, for counting forward passes offline.

Prompt lookup is lossless: a pass verifies drafted tokens and keeps them only while each equals what plain decoding
would have produced there (greedy: the argmax; sampling: the draw from the same processed distribution with the same
random number, one draw per emitted token). So the tokens are plain decoding's, and the passes a reply needs follow
from its token sequence alone: at each point, draft from the context, count how many leading draft tokens equal the
tokens that follow, emit those plus one. Counting is exact, not timed. Keep the rules here in step with the JS module.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LookupConfig:
    max_draft: int = 4  # k: drafted tokens a pass verifies at most
    max_ngram: int = 3  # the longest suffix of the context searched for an earlier match
    min_ngram: int = 3  # the shortest (1: fall back to single-token matches)
    adaptive: bool = True
    # The adaptive switch: after `window` drafting passes whose drafts were accepted at a rate below `min_rate`
    # (accepted / drafted tokens), stop drafting for `pause` emitted tokens, then try again.
    window: int = 4
    min_rate: float = 0.25
    pause: int = 16


def propose(context: list[int], cfg: LookupConfig) -> list[int]:
    """The tokens that followed the last earlier occurrence of the context's latest n tokens (n from max_ngram down to
    min_ngram), at most max_draft of them; [] when none matches."""
    size = len(context)
    for n in range(cfg.max_ngram, cfg.min_ngram - 1, -1):
        if size <= n:
            continue
        suffix = context[size - n :]
        # the match must end before the context does, so that at least one token follows it
        for start in range(size - n - 1, -1, -1):
            if context[start : start + n] == suffix:
                return context[start + n : start + n + cfg.max_draft]
    return []


@dataclass
class Switch:
    """The adaptive switch's state: recent drafting passes' (drafted, accepted) and the tokens left to pause."""

    cfg: LookupConfig
    recent: list[tuple[int, int]] = field(default_factory=list)
    paused: int = 0

    def drafting(self) -> bool:
        return not self.cfg.adaptive or self.paused <= 0

    def record(self, drafted: int, accepted: int, emitted: int) -> None:
        if self.paused > 0:
            self.paused -= emitted
            return
        if not self.cfg.adaptive or drafted == 0:
            return
        self.recent.append((drafted, accepted))
        self.recent = self.recent[-self.cfg.window :]
        if len(self.recent) == self.cfg.window:
            rate = sum(a for _, a in self.recent) / sum(d for d, _ in self.recent)
            if rate < self.cfg.min_rate:
                self.paused = self.cfg.pause
                self.recent = []


@dataclass(frozen=True)
class Count:
    tokens: int  # tokens emitted (the reply's, EOS included when it ended the reply)
    passes: int  # forward passes after the prefill that produced them (the prefill's own token counts as a pass)
    drafted: int  # drafted tokens verified
    sizes: tuple[int, ...]  # tokens each decode pass fed (1 + drafted): what a pass costs depends on it


def count_passes(prompt: list[int], reply: list[int], cfg: LookupConfig) -> Count:
    """Passes plain decoding's `reply` (its emitted tokens, EOS included if any) takes with prompt lookup.

    The first reply token comes from the prefill: 1 pass. After it, each pass feeds the last emitted token plus up
    to max_draft drafted ones (never more than the tokens still to come, as max_new_tokens bounds the draft)."""
    if not reply:
        return Count(0, 0, 0, ())
    switch = Switch(cfg)
    passes, drafted_total, sizes = 1, 0, []
    pos = 1  # reply tokens emitted so far
    while pos < len(reply):
        context = prompt + reply[:pos]
        draft = propose(context, cfg) if switch.drafting() else []
        draft = draft[: len(reply) - pos - 1]
        accepted = 0
        while accepted < len(draft) and draft[accepted] == reply[pos + accepted]:
            accepted += 1
        emitted = accepted + 1
        passes += 1
        drafted_total += len(draft)
        sizes.append(1 + len(draft))
        switch.record(len(draft), accepted, emitted)
        pos += emitted
    return Count(len(reply), passes, drafted_total, tuple(sizes))
