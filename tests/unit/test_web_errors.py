"""web/src/errors.js is the one list of error codes: every code the front end throws, posts or compares is in its
enum with a message, and no module writes a code as a bare string (two did, and were missing from the enum)."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "web" / "src"
ERRORS = SRC / "errors.js"


def enum_names() -> dict[str, str]:
    text = ERRORS.read_text()
    block = re.search(r"export const ErrorCode = Object\.freeze\(\{(.*?)\}\);", text, re.S)
    assert block, "errors.js has no ErrorCode enum"
    return dict(re.findall(r"(\w+):\s*\"([a-z0-9-]+)\"", block.group(1)))


def test_every_code_has_a_message() -> None:
    names = enum_names()
    text = ERRORS.read_text()
    block = re.search(r"export const ERROR_MESSAGES = Object\.freeze\(\{(.*?)\n\}\);", text, re.S)
    assert block
    with_message = set(re.findall(r"\[ErrorCode\.(\w+)\]:", block.group(1)))
    assert with_message == set(names), set(names) ^ with_message
    assert len(set(names.values())) == len(names), "two names share a code"


def test_modules_use_only_enum_codes() -> None:
    names = enum_names()
    used: dict[str, set[str]] = {}
    for path in SRC.glob("*.js"):
        text = path.read_text()
        for name in re.findall(r"\bErrorCode\.(\w+)", text):
            used.setdefault(name, set()).add(path.name)
        # A code spelled as a string is how codes went missing from the enum.
        literal = re.findall(r"new EdgeChatError\(\s*[\"'`]", text)
        assert not literal, f"{path.name}: EdgeChatError with a string code; use ErrorCode"
        if path != ERRORS:
            for code in names.values():
                assert not re.search(rf"(code|error)\s*(===|==|:)\s*[\"']{code}[\"']", text), (path.name, code)
    unknown = {name: files for name, files in used.items() if name not in names}
    assert not unknown, f"codes used but not in errors.js: {unknown}"


def test_no_other_module_defines_codes() -> None:
    for path in SRC.glob("*.js"):
        if path != ERRORS:
            assert "export const ErrorCode" not in path.read_text(), path.name
