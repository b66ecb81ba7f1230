"""Too little browser storage for a model: a clear message with the numbers, and no half-cached model left."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import ChatPage

from edge_contracts import model_cache_name

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUOTA = 64 * 1024 * 1024  # far below the default model's WASM variant
FILLER_MB = 16  # stored before the load, so the message's "used" is more than rounding


def test_quota_exceeded_says_how_much_and_caches_nothing(
    playwright_driver: Any, chromium_path: str, server: str, model_id: str, manifest: dict, tmp_path: Path
) -> None:
    context = playwright_driver.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=chromium_path, args=["--disable-quic"]
    )
    try:
        chat = ChatPage(context.new_page(), server)
        # A real quota, set through DevTools: Chromium refuses the writes past it (a QuotaExceededError mid-download),
        # while estimate() may still report the disk-wide figure, so the pre-download check passes.
        cdp = context.new_cdp_session(chat.page)
        cdp.send("Storage.overrideQuotaForOrigin", {"origin": server, "quotaSize": QUOTA})
        chat.open(model=model_id, device="wasm")
        chat.page.evaluate(
            "async (mb) => (await caches.open('quota-filler')).put('/filler', new Response(new Uint8Array(mb * 1e6)))",
            FILLER_MB,
        )
        chat.page.click("#load-button")
        chat.wait_for("() => document.body.dataset.state !== 'loading'", 120)

        assert chat.page.evaluate("() => document.body.dataset.error") == "quota-exceeded"
        message = chat.error_text()
        needed_mb = manifest["dtypes"][manifest["devices"]["wasm"]]["bytes"] / 1e6
        match = re.search(r"needs ([\d.,]+) MB, ([\d.,]+) MB available \(([\d.,]+) MB used of ([\d.,]+) MB\)", message)
        assert match, message
        needed, available, used, quota = (float(group.replace(",", "")) for group in match.groups())
        assert needed == pytest.approx(needed_mb, rel=0.05)
        # The browser's own figures, as estimate() gave them (Chromium's may be the disk's, not the override): what is
        # used holds the filler, and what is free is the quota less that (each figure rounded to 0.1 MB, or to 1 MB from
        # 100 MB on).
        assert FILLER_MB <= used <= quota, message
        assert available == pytest.approx(quota - used, abs=1.5), message
        assert "storage panel" in message
        caches = chat.page.evaluate("async () => await caches.keys()")
        assert not [c for c in caches if c.startswith(model_cache_name(model_id, ""))], caches
        assert chat.state != "ready"
    finally:
        context.close()
