"""Numbers the page and model_prep must agree on, each written once per language."""

import re
from pathlib import Path

from model_prep import layout

WEB = Path(__file__).resolve().parents[2] / "web" / "src"


def test_the_pages_context_cap_is_the_kv_cache_the_memory_estimate_budgets() -> None:
    # manifest.json's memory_bytes counts KV cache for layout.KV_CONTEXT_FOR_MEMORY tokens; the page's default context
    # limit stops there, so the memory warning stays true.
    found = re.search(r"export const KV_BUDGET_TOKENS = (\d+);", (WEB / "settings.js").read_text())
    assert found and int(found.group(1)) == layout.KV_CONTEXT_FOR_MEMORY
