"""`python -m app --lan`: the self-signed certificate is made once, reused, and remade when it no longer fits."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509

from app.__main__ import certificate_lines, lan_banner, parse_args, served_hosts
from app.tls import _names_in, ensure_certificate, fingerprint, qr_text


def test_certificate_is_created_then_reused(tmp_path: Path) -> None:
    folder = tmp_path / ".tls"
    first = ensure_certificate(folder, ["192.168.1.20"], hostname="box")
    assert first.created
    cert = x509.load_pem_x509_certificate(first.cert.read_bytes())
    assert {"192.168.1.20", "127.0.0.1", "localhost", "box"} <= _names_in(cert)
    assert cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=800)
    assert first.key.stat().st_mode & 0o077 == 0  # the key is private to its owner
    # Usable by the ssl module as uvicorn uses it.
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(first.cert, first.key)

    before = first.cert.read_bytes()
    second = ensure_certificate(folder, ["192.168.1.20"], hostname="box")
    assert not second.created and second.cert.read_bytes() == before
    assert fingerprint(second.cert) == fingerprint(first.cert)


def test_certificate_is_remade_for_a_new_address_or_a_broken_file(tmp_path: Path) -> None:
    folder = tmp_path / ".tls"
    ensure_certificate(folder, ["192.168.1.20"], hostname="box")
    moved = ensure_certificate(folder, ["10.0.0.7"], hostname="box")
    assert moved.created
    assert "10.0.0.7" in _names_in(x509.load_pem_x509_certificate(moved.cert.read_bytes()))
    (folder / "key.pem").write_text("garbage")
    assert ensure_certificate(folder, ["10.0.0.7"], hostname="box").created


def test_lan_flag_and_banner(tmp_path: Path) -> None:
    assert parse_args(["--lan"]).lan and not parse_args([]).lan
    assert parse_args([]).host == "127.0.0.1"
    tls = ensure_certificate(tmp_path, ["192.168.1.20"], hostname="box")
    qr = qr_text("https://192.168.1.20:8000/")
    assert qr.count("\n") > 10
    lines = certificate_lines(tls.cert, True, fingerprint(tls.cert))
    banner = lan_banner("https://192.168.1.20:8000/", "T0KEN", lines)
    assert "https://192.168.1.20:8000/" in banner and "created" in banner and qr in banner
    # The phone's benchmark page carries the token that posting results from another device needs.
    assert "https://192.168.1.20:8000/bench?token=T0KEN" in banner
    assert qr_text("https://192.168.1.20:8000/bench?token=T0KEN") in banner


def test_served_hosts() -> None:
    assert served_hosts("127.0.0.1", None, "box", []) == ("localhost", "127.0.0.1", "[::1]")
    assert served_hosts("0.0.0.0", "192.168.1.20", "Box", ["chat.example"]) == (
        "localhost",
        "127.0.0.1",
        "[::1]",
        "192.168.1.20",
        "box",
        "chat.example",
    )
    assert "[fe80::1]" in served_hosts("fe80::1", "fe80::1", "box", [])
