"""Where the app keeps what it writes: the bench results database and the `--lan` TLS key and certificate.

Never in the models folder: that may be a read-only mount or a published bucket, and must never ship a private key.
The default is the per-user state folder (XDG_STATE_HOME/edge-chat, i.e. ~/.local/state/edge-chat on Linux):
state that should survive restarts but is neither configuration nor data a user would back up or share.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

STATE_ENV = "EDGE_CHAT_STATE"
APP_NAME = "edge-chat"


def default_state_dir() -> Path:
    """`$EDGE_CHAT_STATE`, else the platform's per-user state folder for edge-chat."""
    configured = os.environ.get(STATE_ENV)
    if configured:
        return Path(configured)
    return platformdirs.user_state_path(APP_NAME, appauthor=False)


def results_db(state_dir: Path) -> Path:
    return state_dir / "bench-results.sqlite3"


def tls_dir(state_dir: Path) -> Path:
    return state_dir / "tls"
