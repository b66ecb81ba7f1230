"""Draws the app icons (web/src/icons/*.png) with the standard library only: a chat bubble on the accent colour.

    python web/scripts/icons.py

The PNGs are committed; rerun only to change the design. `maskable` icons keep the glyph inside the
central 80 % safe zone and fill the whole square, as the maskable-icon spec asks.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

ACCENT = (47, 91, 211)
WHITE = (255, 255, 255)
OUT = Path(__file__).resolve().parents[1] / "src" / "icons"


def _inside_rounded_rect(x: float, y: float, x0: float, y0: float, x1: float, y1: float, r: float) -> bool:
    if not (x0 <= x <= x1 and y0 <= y <= y1):
        return False
    cx = min(max(x, x0 + r), x1 - r)
    cy = min(max(y, y0 + r), y1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def _inside_triangle(x: float, y: float, a: tuple, b: tuple, c: tuple) -> bool:
    def side(p: tuple, q: tuple) -> float:
        return (x - q[0]) * (p[1] - q[1]) - (p[0] - q[0]) * (y - q[1])

    d1, d2, d3 = side(a, b), side(b, c), side(c, a)
    return not ((d1 < 0 or d2 < 0 or d3 < 0) and (d1 > 0 or d2 > 0 or d3 > 0))


def pixel(u: float, v: float, maskable: bool) -> tuple[int, int, int, int]:
    """Colour at (u, v) in [0, 1]²."""
    if not maskable and not _inside_rounded_rect(u, v, 0.0, 0.0, 1.0, 1.0, 0.2):
        return (0, 0, 0, 0)
    # The glyph: a speech bubble with a tail and three dots, scaled into the safe zone for maskable icons.
    s = 0.62 if maskable else 0.8
    gx, gy = (u - 0.5) / s + 0.5, (v - 0.5) / s + 0.5
    dots = any((gx - cx) ** 2 + (gy - 0.45) ** 2 <= 0.055**2 for cx in (0.3, 0.5, 0.7))
    bubble = _inside_rounded_rect(gx, gy, 0.1, 0.18, 0.9, 0.72, 0.14) or _inside_triangle(
        gx, gy, (0.24, 0.66), (0.44, 0.66), (0.2, 0.88)
    )
    if bubble and not dots:
        return (*WHITE, 255)
    return (*ACCENT, 255)


def png(size: int, maskable: bool) -> bytes:
    ss = 3  # supersampling for smooth edges
    rows = []
    for y in range(size):
        row = bytearray(b"\0")
        for x in range(size):
            acc = [0, 0, 0, 0]
            for sy in range(ss):
                for sx in range(ss):
                    r, g, b, a = pixel((x + (sx + 0.5) / ss) / size, (y + (sy + 0.5) / ss) / size, maskable)
                    acc = [acc[0] + r * a, acc[1] + g * a, acc[2] + b * a, acc[3] + a]
            alpha = acc[3] / (ss * ss)
            rgb = [round(c / acc[3]) if acc[3] else 0 for c in acc[:3]]
            row += bytes([*rgb, round(alpha)])
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for size in (192, 512):
        (OUT / f"icon-{size}.png").write_bytes(png(size, maskable=False))
        (OUT / f"icon-maskable-{size}.png").write_bytes(png(size, maskable=True))
    print(f"wrote {sorted(p.name for p in OUT.glob('*.png'))}")


if __name__ == "__main__":
    main()
