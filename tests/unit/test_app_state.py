"""App state lives outside the models folder: a read-only models mount is served, results go to the state folder."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_helpers import BENCH_RESULTS_URL, CONFIG, MODEL_ID, bench_result, build_site, local_client

from app.server import create_app
from app.state import STATE_ENV, default_state_dir, results_db, tls_dir


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under root with its mode, size and mtime: any write shows up."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[path.relative_to(root).as_posix()] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    site = build_site(tmp_path)
    models = site.models
    for path in [*models.rglob("*"), models]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    yield models
    for path in [models, *models.rglob("*")]:
        path.chmod(stat.S_IRWXU)


def test_a_read_only_models_folder_is_served_and_never_written(tmp_path: Path, read_only: Path) -> None:
    # As root the mode bits alone would not stop a write, so the folder is also compared before and after.
    before = snapshot(read_only)
    state = tmp_path / "fresh-state"
    client = local_client(create_app(read_only, tmp_path / "web", state))
    assert client.get("/").status_code == 200
    listed = client.get("/api/models").json()["models"]
    assert MODEL_ID in [m["id"] for m in listed]
    revision = next(m["revision"] for m in listed if m["id"] == MODEL_ID)
    artifact = client.get(f"/models/{MODEL_ID}/{revision}/config.json")
    assert artifact.status_code == 200 and artifact.content == CONFIG
    posted = client.post(
        BENCH_RESULTS_URL,
        content=json.dumps({"client": "a", "results": [bench_result()]}),
        headers={"content-type": "application/json"},
    )
    assert posted.status_code == 201
    assert results_db(state).is_file()
    assert snapshot(read_only) == before


def test_the_state_folder_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_ENV, str(tmp_path / "mine"))
    assert default_state_dir() == tmp_path / "mine"
    monkeypatch.delenv(STATE_ENV)
    if os.name == "posix" and os.uname().sysname == "Linux":
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
        assert default_state_dir() == tmp_path / "xdg" / "edge-chat"
    assert tls_dir(tmp_path) == tmp_path / "tls" and results_db(tmp_path).parent == tmp_path
