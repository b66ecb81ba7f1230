"""`--lan`: a self-signed certificate for serving on the local network, made once and reused.

Browsers only give a page a service worker, Cache Storage and WebGPU in a secure context, so a phone on the
LAN needs https. The certificate names the machine's LAN addresses and host name; it is regenerated only when
missing, unreadable, expired within a day, or when an address it does not name appears.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 825  # the longest validity Apple platforms accept for a TLS server certificate


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    created: bool  # False: an existing certificate was reused


def lan_address() -> str:
    """The address other machines reach this one at (the interface of the default route; no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: routing decision only
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def _names_in(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))


def _reusable(cert_path: Path, key_path: Path, names: set[str], now: dt.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc > now + dt.timedelta(days=1) and names <= _names_in(cert)


def ensure_certificate(folder: Path, addresses: list[str], hostname: str | None = None) -> TlsFiles:
    """`folder/cert.pem` + `folder/key.pem` naming `addresses` (IPs) and the host name; reused when still good."""
    hostname = hostname or socket.gethostname()
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    names = {*addresses, "127.0.0.1", "localhost", hostname}
    now = dt.datetime.now(dt.UTC)
    if _reusable(cert_path, key_path, names, now):
        return TlsFiles(cert_path, key_path, created=False)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Edge Chat on {hostname}")])
    alt: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(hostname)]
    for address in sorted({*addresses, "127.0.0.1"}):
        alt.append(x509.IPAddress(ipaddress.ip_address(address)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path.touch(mode=0o600, exist_ok=True)
    key_path.chmod(0o600)
    key_path.write_bytes(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(cert_path, key_path, created=True)


def fingerprint(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def qr_text(url: str) -> str:
    """The URL as a QR code drawn with text (for a terminal), or '' without the qrcode package."""
    try:
        import qrcode
    except ImportError:
        return ""
    code = qrcode.QRCode(border=1)
    code.add_data(url)
    code.make(fit=True)
    lines: list[str] = []

    class Sink:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return False

    code.print_ascii(out=Sink())
    return "".join(lines)
