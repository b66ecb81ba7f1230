"""The prompt set of the penalty and prompt-lookup study (bench/lookup_study.py): four kinds of turn.

- open: everyday chat, the conversations of bench/chat_quality.py (loops are what matters there);
- grounded: summarize or answer from a pasted passage (scored by the facts the reply must carry);
- rewrite: fix or rewrite pasted text or code (scored by word similarity to the corrected text);
- followup: a question about an earlier reply, which is fixed text here so every setting sees the same one.

Each case: `turns`, the conversation as (role, text) pairs ending with the user turn to answer, and a check:
`keywords` (the share of them the reply contains, case-insensitive) or `reference` (difflib's word-level ratio of the
reply, its code block if it has one, to the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

from .chat_quality import CONVERSATIONS


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    turns: tuple[tuple[str, str], ...]  # (role, text), the last one the user's; () for open chat (see open_cases)
    keywords: tuple[str, ...] = ()
    reference: str = ""


BRIDGE = (
    "The Golden Gate Bridge is a suspension bridge spanning the Golden Gate, the one-mile-wide strait connecting San "
    "Francisco Bay and the Pacific Ocean. It opened to traffic on May 27, 1937, after four years of construction led "
    "by chief engineer Joseph Strauss. The bridge is 2,737 metres long, and its towers rise 227 metres above the "
    "water. Its colour, known as International Orange, was chosen because it fits the natural surroundings and "
    "makes the bridge easy to see in fog. About 112,000 vehicles cross it every day."
)
MEMO = (
    "Team update: starting March 3, our team moves from the second floor of Building A to the fourth floor of "
    "Building B. Desks will be assigned by Priya Raman; please send her your seating preferences by February 20. "
    "Parking passes for the new garage are issued by Maria Lopez at the front desk. The kitchen on the fourth floor "
    "has a new coffee machine, and the old printers will be replaced by two colour printers near the elevators."
)
LEAVES = (
    "Plants make their own food through photosynthesis. Inside their leaves, a green pigment called chlorophyll "
    "absorbs sunlight. The plant uses that energy to turn water from the soil and carbon dioxide from the air into "
    "glucose, a sugar that feeds its growth. Oxygen is released into the air as a by-product. Without this process, "
    "most life on Earth would not have enough food or oxygen."
)
BREAD = (
    "To make the flatbread, mix 300 grams of flour, a pinch of salt, 180 millilitres of warm water and two "
    "tablespoons of olive oil. Knead the dough for five minutes until it is smooth, then cover it and let it rest "
    "for 30 minutes. Divide it into six balls, roll each one thin, and cook them in a hot dry pan for about one "
    "minute on each side, until brown spots appear."
)

TYPOS = (
    "The quick brown fox jumpd over the lazy dog. It was a beautifull day and the sun was shinning brightly over the "
    "feilds. The farmer watched from his porch and smiled, becuase everything was peacefull."
)
TYPOS_FIXED = (
    "The quick brown fox jumped over the lazy dog. It was a beautiful day and the sun was shining brightly over the "
    "fields. The farmer watched from his porch and smiled, because everything was peaceful."
)
LETTER = (
    "Dear Mr. Smith, thank you for you're letter from last week. We has received the documents you send and will "
    "review them carefuly. Our team will contact you untill the end of the month with a decision. Please dont "
    "hesitate to call us if you has any questions. Best regards, Anna"
)
LETTER_FIXED = (
    "Dear Mr. Smith, thank you for your letter from last week. We have received the documents you sent and will "
    "review them carefully. Our team will contact you by the end of the month with a decision. Please don't "
    "hesitate to call us if you have any questions. Best regards, Anna"
)
PY_BUG = """def average(numbers):
    total = 0
    for n in numbers:
        total += n
    return total / len(number)"""
PY_FIXED = """def average(numbers):
    total = 0
    for n in numbers:
        total += n
    return total / len(numbers)"""
JS_BUG = """function countVowels(text) {
  let count = 0;
  for (const ch of text.toLowerCase()) {
    if ("aeiou".includes(ch)) {
      count = 1;
    }
  }
  return count;
}"""
JS_FIXED = """function countVowels(text) {
  let count = 0;
  for (const ch of text.toLowerCase()) {
    if ("aeiou".includes(ch)) {
      count += 1;
    }
  }
  return count;
}"""

TIPS = (
    "1. Practice every day, even if only for ten minutes.\n2. Listen to podcasts and music in the language.\n"
    "3. Speak with native speakers as early as you can."
)
INVITE = (
    "Hi neighbours! We are having a barbecue in our garden this Saturday at 5 pm. There will be burgers, salads and "
    "cold drinks. Kids and dogs are welcome. Please let us know by Thursday if you can come. See you there, Tom and "
    "Lisa"
)
PLANETS = (
    "The eight planets of the solar system, in order from the Sun, are Mercury, Venus, Earth, Mars, Jupiter, Saturn, "
    "Uranus and Neptune. Mercury, Venus, Earth and Mars are rocky planets; Jupiter and Saturn are gas giants; Uranus "
    "and Neptune are ice giants."
)
TEA = (
    "1. Boil fresh water.\n2. Warm the teapot with a little hot water and pour it out.\n3. Put one teaspoon of loose "
    "tea per cup into the pot.\n4. Pour in the boiling water and let it steep for three to five minutes.\n"
    "5. Strain the tea into cups and add milk or lemon if you like."
)


def _u(text: str) -> tuple[str, str]:
    return ("user", text)


def _a(text: str) -> tuple[str, str]:
    return ("assistant", text)


GROUNDED = [
    Case(
        "grounded",
        "bridge",
        (_u(f"{BRIDGE}\n\nWhen did the bridge open, and what is its colour called?"),),
        keywords=("1937", "international orange"),
    ),
    Case(
        "grounded",
        "memo",
        (_u(f"{MEMO}\n\nWho issues the parking passes, and when does the team move?"),),
        keywords=("maria lopez", "march 3"),
    ),
    Case(
        "grounded",
        "leaves",
        (_u(f"Summarize this text in two sentences.\n\n{LEAVES}"),),
        keywords=("chlorophyll", "sunlight", "oxygen", "carbon dioxide"),
    ),
    Case(
        "grounded",
        "bread",
        (_u(f"{BREAD}\n\nHow long should the dough rest, and how many balls do I make?"),),
        keywords=("30 minutes", "six"),
    ),
]
REWRITE = [
    Case(
        "rewrite",
        "typos",
        (_u(f"Fix the spelling mistakes in this text. Reply with the corrected text only.\n\n{TYPOS}"),),
        reference=TYPOS_FIXED,
    ),
    Case(
        "rewrite",
        "letter",
        (_u(f"Correct the grammar and spelling of this letter. Reply with the corrected letter only.\n\n{LETTER}"),),
        reference=LETTER_FIXED,
    ),
    Case(
        "rewrite",
        "python",
        (_u(f"Fix the bug in this Python function:\n\n```python\n{PY_BUG}\n```"),),
        reference=PY_FIXED,
    ),
    Case(
        "rewrite",
        "js",
        (
            _u(
                "This JavaScript function should count the vowels in a text but it does not. Fix it:\n\n"
                f"```javascript\n{JS_BUG}\n```"
            ),
        ),
        reference=JS_FIXED,
    ),
]
FOLLOWUP = [
    Case(
        "followup",
        "tips",
        (
            _u("Give me three tips for learning a new language."),
            _a(TIPS),
            _u("Can you explain the second tip in more detail?"),
        ),
        keywords=("podcast", "music"),
    ),
    Case(
        "followup",
        "invite",
        (
            _u("Write a short note inviting my neighbours to a barbecue on Saturday at 5 pm."),
            _a(INVITE),
            _u("Change the time to 6 pm and keep everything else the same."),
        ),
        reference=INVITE.replace("5 pm", "6 pm"),
    ),
    Case(
        "followup",
        "planets",
        (
            _u("What are the planets of the solar system?"),
            _a(PLANETS),
            _u("Which of those are the gas giants, and which is the largest?"),
        ),
        keywords=("jupiter", "saturn"),
    ),
    Case(
        "followup",
        "tea",
        (_u("How do I make a pot of tea?"), _a(TEA), _u("Repeat step 3 and step 4 only.")),
        keywords=("teaspoon", "steep"),
    ),
]


def open_cases() -> list[list[str]]:
    """Open chat: chat_quality's conversations (user turns; each reply is the setting's own)."""
    return [list(turns) for turns in CONVERSATIONS]


CASES = GROUNDED + REWRITE + FOLLOWUP
