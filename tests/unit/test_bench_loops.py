"""The chat-quality report's loop detector, on the loops FACTS.md records and on replies that merely list things."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is a folder of scripts, not installed

from bench.loops import check  # noqa: E402

POEM_LOOP = "Autumn leaves fall down,\nIn a muted hue,\n" + "A muted hue, a muted hue,\n" * 40
SUMMARY_LOOP = "Here is a summary of the list. " + "Stay inspired\n" * 250
PACKING_LIST = """Here is a packing list for a weekend camping trip:
1. Tent, stakes and a ground sheet
2. Sleeping bag and a sleeping pad
3. A small stove, fuel and a lighter
4. Water bottles and a filter
5. Warm layers, a rain jacket and spare socks
6. Headlamp with extra batteries
7. First-aid kit and sunscreen
8. Food for two days, snacks and coffee"""
EMAIL = """Subject: Request for Friday off

Hi Anna,

I would like to ask for this Friday off to take care of a family matter. My tasks for the week will be done by
Thursday, and Sam has agreed to cover any urgent requests. Please let me know if that works for you.

Thank you,
Alex"""


def test_recorded_loops_are_loops() -> None:
    for text in (POEM_LOOP, SUMMARY_LOOP):
        result = check(text)
        assert result.coverage > 0.9, result
        assert result.loops(hit_max_new_tokens=True) and result.loops(hit_max_new_tokens=False)
    assert check(SUMMARY_LOOP).top_phrase == "stay inspired stay inspired"


def test_everyday_replies_are_not() -> None:
    for text in (PACKING_LIST, EMAIL, "The capital of France is Paris.", ""):
        result = check(text)
        assert result.coverage < 0.1, result
        assert not result.loops(hit_max_new_tokens=True)


def test_a_reply_that_ends_in_a_loop_counts_when_cut_off() -> None:
    text = EMAIL + "\n" + PACKING_LIST + "\n" + "I hope this helps. " * 12
    result = check(text)
    assert result.coverage <= 0.30 < result.tail_coverage
    assert result.loops(hit_max_new_tokens=True)
    assert not result.loops(hit_max_new_tokens=False)
