"""The app as a network service: Host names against DNS rebinding, the --lan token, the post rate, the results cap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_helpers import BENCH_RESULTS_URL, MODEL_ID, bench_result, build_site, local_client, raw_request
from starlette.testclient import TestClient

from app.access import Access
from app.bench_results import ResultStore
from app.server import create_app
from app.state import results_db

LAN = "192.168.1.20"
TOKEN = "s3cret-token"
JSON = {"content-type": "application/json"}


def body(client: str = "phone", n: int = 1) -> bytes:
    return json.dumps({"client": client, "results": [bench_result() for _ in range(n)]}).encode()


def lan_app(tmp_path: Path, **access: object):
    site = build_site(tmp_path)
    settings = {"allowed_hosts": ("localhost", "127.0.0.1", "[::1]", LAN), "token": TOKEN, **access}
    app = create_app(site.models, site.web, tmp_path / "state", access=Access(**settings))
    return site, app


def stored(tmp_path: Path) -> int:
    return ResultStore(results_db(tmp_path / "state")).count()


# --- DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 ------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.", "[::2]"])
@pytest.mark.parametrize("path", ["/", "/api/models", "/api/bench/results", "/sw.js"])
def test_a_rebinding_host_is_refused(tmp_path: Path, host: str, path: str) -> None:
    site = build_site(tmp_path)
    response = raw_request(site.app, path.encode(), headers={"Host": host})
    assert response.status == 400
    assert b"tiny" not in response.body and b"models" not in response.body


def test_a_rebinding_host_cannot_fetch_an_artifact_or_post(tmp_path: Path) -> None:
    site = build_site(tmp_path)
    artifact = raw_request(site.app, (site.base + "config.json").encode(), headers={"Host": "evil.example"})
    assert artifact.status == 400 and b"llama" not in artifact.body
    posted = raw_request(
        site.app, BENCH_RESULTS_URL.encode(), "POST", headers={"Host": "evil.example", **JSON}, body=body()
    )
    assert posted.status == 400
    assert stored(tmp_path) == 0


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"])
def test_loopback_names_are_served(tmp_path: Path, host: str) -> None:
    site = build_site(tmp_path)
    assert raw_request(site.app, b"/api/models", headers={"Host": host}).status == 200


def test_a_lan_server_answers_to_its_lan_address_only(tmp_path: Path) -> None:
    _, app = lan_app(tmp_path)
    assert raw_request(app, b"/api/models", headers={"Host": f"{LAN}:8000"}).status == 200
    assert raw_request(app, b"/api/models", headers={"Host": "192.168.1.21:8000"}).status == 400


# --- the token on --lan ---------------------------------------------------------------------------------------


def lan_client(app) -> TestClient:
    # TestClient's peer is "testclient": not loopback, so it stands for a phone on the network.
    return TestClient(app, base_url=f"https://{LAN}:8000")


def test_an_unauthenticated_lan_post_is_401_and_stores_nothing(tmp_path: Path) -> None:
    _, app = lan_app(tmp_path)
    response = lan_client(app).post(BENCH_RESULTS_URL, content=body(), headers=JSON)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "token" in response.json()["error"]
    assert stored(tmp_path) == 0


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}x", "Bearer x", f"Basic {TOKEN}", TOKEN, "Bearer"])
def test_a_wrong_token_is_refused(tmp_path: Path, authorization: str) -> None:
    _, app = lan_app(tmp_path)
    response = lan_client(app).post(BENCH_RESULTS_URL, content=body(), headers={**JSON, "Authorization": authorization})
    assert response.status_code in (401, 403)
    assert response.headers["content-type"] == "application/json"
    assert stored(tmp_path) == 0


def test_the_printed_token_lets_a_phone_post(tmp_path: Path) -> None:
    _, app = lan_app(tmp_path)
    response = lan_client(app).post(
        BENCH_RESULTS_URL, content=body(), headers={**JSON, "Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 201
    assert stored(tmp_path) == 1


def test_the_machine_itself_needs_no_token(tmp_path: Path) -> None:
    _, app = lan_app(tmp_path)
    for peer in ("127.0.0.1", "::1"):
        response = raw_request(app, BENCH_RESULTS_URL.encode(), "POST", headers=JSON, client=(peer, 5000), body=body())
        assert response.status == 201, response.body
    assert stored(tmp_path) == 2


def test_a_loopback_server_needs_no_token(tmp_path: Path) -> None:
    site = build_site(tmp_path)
    assert local_client(site.app).post(BENCH_RESULTS_URL, content=body(), headers=JSON).status_code == 201


# --- floods ------------------------------------------------------------------------------------------------


def test_a_flood_past_the_rate_is_429_per_client(tmp_path: Path) -> None:
    _, app = lan_app(tmp_path, token=None, post_rate="3/minute")
    flood = [
        raw_request(app, BENCH_RESULTS_URL.encode(), "POST", headers=JSON, client=("192.168.1.50", 5000), body=body())
        for _ in range(5)
    ]
    assert [r.status for r in flood] == [201, 201, 201, 429, 429]
    assert json.loads(flood[-1].body)["error"].startswith("too many posts from 192.168.1.50")
    other = raw_request(
        app, BENCH_RESULTS_URL.encode(), "POST", headers=JSON, client=("192.168.1.51", 5000), body=body()
    )
    assert other.status == 201  # one client's flood does not lock out the others
    assert stored(tmp_path) == 4


def test_a_flood_past_the_cap_keeps_only_the_newest_rows(tmp_path: Path) -> None:
    site, app = lan_app(tmp_path, token=None, post_rate="1000/minute", results_cap=5)
    client = local_client(app)
    for i in range(12):
        assert client.post(BENCH_RESULTS_URL, content=body(f"device {i}", n=2), headers=JSON).status_code == 201
    assert stored(tmp_path) == 5
    listed = client.get(BENCH_RESULTS_URL).json()["results"]
    assert [r["client"] for r in listed] == ["device 11", "device 11", "device 10", "device 10", "device 9"]
    assert all(r["model"] == MODEL_ID for r in listed)
    assert site.models.is_dir() and not any(p.suffix == ".sqlite3" for p in site.models.rglob("*"))
