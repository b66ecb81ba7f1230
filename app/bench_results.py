"""Benchmark results posted by `/bench` from any device (phones Playwright cannot drive), kept in SQLite.

Everything posted is validated against the one metrics schema; junk is a 400/413/415, never a 500 or a row.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

from edge_contracts import BENCH_NUMBERS, BENCH_TEXTS, GGUF_TYPES, METRIC_NUMBERS, METRIC_TEXTS, RUNTIMES

MAX_BODY_BYTES = 64 * 1024
MAX_RESULTS_PER_POST = 50
MAX_TEXT = 200
# The one metrics schema (edge_contracts), plus what the bench adds per run.
NUMBERS = METRIC_NUMBERS
OPTIONAL_NUMBERS = BENCH_NUMBERS
TEXTS = METRIC_TEXTS
OPTIONAL_TEXTS = BENCH_TEXTS
DEVICES = {"webgpu", "wasm"}
DTYPES = {"fp32", "fp16", "q8", "q4", "q4f16"}
# GGUF dtypes run by llama.cpp: "gguf-" and one of the GGUF writer's tensor types.
GGUF_DTYPES = {f"gguf-{t}" for t in GGUF_TYPES}

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
  id INTEGER PRIMARY KEY,
  received REAL NOT NULL,
  client TEXT NOT NULL,
  user_agent TEXT NOT NULL,
  model TEXT NOT NULL,
  revision TEXT NOT NULL,
  device TEXT NOT NULL,
  dtype TEXT NOT NULL,
  metrics TEXT NOT NULL
)
"""


class InvalidResults(ValueError):
    """What the client sent is not a results document; the message says which field is wrong."""


def validate(document: Any, known_models: set[str]) -> tuple[str, str, list[dict[str, Any]]]:
    """Return (client label, user agent, results) or raise InvalidResults."""
    if not isinstance(document, dict):
        raise InvalidResults("body must be a JSON object")
    client = _text(document, "client", required=True)
    user_agent = _text(document, "user_agent", required=False) or ""
    results = document.get("results")
    if not isinstance(results, list) or not results:
        raise InvalidResults("results must be a non-empty list")
    if len(results) > MAX_RESULTS_PER_POST:
        raise InvalidResults(f"at most {MAX_RESULTS_PER_POST} results per post")
    return client, user_agent, [_result(r, i, known_models) for i, r in enumerate(results)]


def _result(item: Any, index: int, known_models: set[str]) -> dict[str, Any]:
    where = f"results[{index}]"
    if not isinstance(item, dict):
        raise InvalidResults(f"{where} must be an object")
    unknown = set(item) - set(NUMBERS) - set(OPTIONAL_NUMBERS) - set(TEXTS) - set(OPTIONAL_TEXTS)
    if unknown:
        raise InvalidResults(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
    clean: dict[str, Any] = {}
    for key in TEXTS:
        clean[key] = _text(item, key, required=True, where=where)
    for key in OPTIONAL_TEXTS:
        if key in item:
            clean[key] = _text(item, key, required=True, where=where)
    if clean["model"] not in known_models:
        raise InvalidResults(f"{where}.model {clean['model']!r} is not in the catalog")
    if clean["device"] not in DEVICES:
        raise InvalidResults(f"{where}.device must be one of {sorted(DEVICES)}")
    if clean["dtype"] not in DTYPES | GGUF_DTYPES:
        raise InvalidResults(f"{where}.dtype must be one of {sorted(DTYPES)} or gguf-<type>")
    if clean["runtime"] not in RUNTIMES:
        raise InvalidResults(f"{where}.runtime must be one of {list(RUNTIMES)}")
    failed = "error" in clean
    for key in NUMBERS:
        if key in item or not failed:  # a failed run may lack figures, but never carries bad ones
            clean[key] = _number(item, key, where)
    for key in OPTIONAL_NUMBERS:
        if key in item and item[key] is not None:
            clean[key] = _number(item, key, where)
    return clean


def _text(doc: Mapping[str, Any], key: str, required: bool, where: str = "body") -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidResults(f"{where}.{key} must be a non-empty string")
    if len(value) > MAX_TEXT * (2 if key in ("user_agent", "error") else 1):
        raise InvalidResults(f"{where}.{key} is too long")
    return value


def _number(doc: Mapping[str, Any], key: str, where: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidResults(f"{where}.{key} must be a finite number ≥ 0")
    return float(value)


class ResultStore:
    """Results in SQLite, at most `cap` rows: each insert prunes the oldest beyond it, so posts cannot grow it."""

    def __init__(self, path: Path, cap: int = 5000) -> None:
        self.path = path
        self.cap = cap
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=5)

    def add(self, client: str, user_agent: str, results: list[dict[str, Any]]) -> int:
        now = time.time()
        rows = [
            (now, client, user_agent, r["model"], r["revision"], r["device"], r["dtype"], json.dumps(r))
            for r in results
        ]
        with closing(self._connect()) as db, db:
            db.executemany(
                "INSERT INTO results (received, client, user_agent, model, revision, device, dtype, metrics)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute(
                "DELETE FROM results WHERE id <= (SELECT id FROM results ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (self.cap,),
            )
        return len(rows)

    def count(self) -> int:
        with closing(self._connect()) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def latest(self, limit: int = 200) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT received, client, user_agent, metrics FROM results ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [
            {"received": received, "client": client, "user_agent": agent, **json.loads(metrics)}
            for received, client, agent, metrics in rows
        ]
