"""The printed table, the ratios and build/bench/report.html (inline SVG drawn here; no external assets)."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

COLUMNS = [
    ("runner", "runner", None),
    ("model", "model", None),
    ("dtype", "dtype", None),
    ("threads", "thr", None),
    ("runtime_threads", "ran", None),  # threads the runtime reported it used
    ("prompt", "prompt", None),
    ("kv", "kv", None),  # WebGPU's KV cache: static or dynamic
    ("download_bytes", "dl MB", -6),
    ("load_s", "load s", 1),
    ("warm_load_s", "reload s", 1),
    ("ttft_s", "TTFT s", 2),
    ("prefill_tokens_per_s", "prefill t/s", 1),
    ("decode_tokens_per_s", "decode t/s", 2),
    ("turn2_ttft_s", "t2 reuse s", 2),
    ("turn2_ttft_no_reuse_s", "t2 fresh s", 2),
    ("peak_memory_bytes", "heap MB", -6),
    ("model_memory_bytes", "private MB", -6),  # private memory the cold run added to the browser, at its peak
    ("model_memory_settled_bytes", "settled MB", -6),  # the same at the cold run's end
    ("revisit_load_s", "revisit s", 1),  # a returning visit: a new page, same profile, load → ready
    ("revisit_memory_bytes", "revisit MB", -6),  # the private memory the returning visit added, at its peak
    ("peak_rss_bytes", "RSS MB", -6),
    ("error", "error", None),
]


def _fmt(value: Any, digits: int | None) -> str:
    if value is None or value == "":
        return "–"
    if digits is None:
        return str(value)
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    if digits < 0:
        return f"{value / 10 ** (-digits):.0f}"
    return f"{value:.{digits}f}"


# Per decode step on WebGPU (the rows' `gpu`, web/src/gpu-counters.js): counts are the same on any adapter, the encode
# time (CPU, a step's start to its last submit) is a same-run ratio only.
GPU_COLUMNS = [
    ("model", "model", None),
    ("dtype", "dtype", None),
    ("prompt", "prompt", None),
    ("kv", "kv", None),
    ("prompt_tokens", "prompt tok", None),
    ("buffers_per_step", "buffers", 2),
    ("submits_per_step", "submits", 2),
    ("dispatches_per_step", "dispatches", 1),
    ("readbacks_per_step", "readbacks", 2),
    ("readback_bytes_per_step", "rb bytes", 0),
    ("writes_per_step", "writes", 1),
    ("write_bytes_per_step", "wr bytes", 0),
    ("encode_ms_per_step", "encode ms", 2),
    ("steps", "steps", None),
]


def _grid(columns: list[tuple[str, str, int | None]], rows: list[dict[str, Any]]) -> str:
    cells = [[_fmt(r.get(key), digits) for key, _, digits in columns] for r in rows]
    heads = [head for _, head, _ in columns]
    widths = [max(len(h), *(len(c[i][:60]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
    line = lambda items: "  ".join(s[:60].ljust(w) for s, w in zip(items, widths, strict=True))  # noqa: E731
    return "\n".join([line(heads), line(["-" * w for w in widths]), *(line(c) for c in cells)])


def gpu_table(rows: list[dict[str, Any]]) -> str:
    """The WebGPU calls per decode step of the rows that counted them (empty when none did)."""
    counted = [{**r, **r["gpu"]} for r in rows if isinstance(r.get("gpu"), dict)]
    return _grid(GPU_COLUMNS, counted) if counted else ""


def table(rows: list[dict[str, Any]]) -> str:
    """All rows; below them, on a WebGPU run, the WebGPU calls per decode step (gpu_table)."""
    main = _grid(COLUMNS, rows)
    gpu = gpu_table(rows)
    return f"{main}\n\nWebGPU calls per decode step (encode ms: CPU time, a same-run ratio)\n{gpu}" if gpu else main


def _key(r: dict[str, Any]) -> tuple:
    return (r.get("model"), r.get("dtype"), r.get("threads"), r.get("prompt"))


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Edge Chat decode vs native (same dtype, threads, prompt) and vs wllama (same threads, prompt); turn 2."""
    ok = [r for r in rows if not r.get("error") and r.get("decode_tokens_per_s")]
    native = {_key(r): r for r in ok if r["runner"].startswith("native-")}
    wllama = {(r.get("threads"), r.get("prompt")): r for r in ok if r["runner"] == "wllama"}
    out = []
    for r in ok:
        if r["runner"] != "edge-chat":
            continue
        n = native.get(_key(r))
        w = wllama.get((r.get("threads"), r.get("prompt")))
        t2, t2_fresh = r.get("turn2_ttft_s"), r.get("turn2_ttft_no_reuse_s")
        memory, settled, revisit, download = (
            r.get(k)
            for k in ("model_memory_bytes", "model_memory_settled_bytes", "revisit_memory_bytes", "download_bytes")
        )
        out.append(
            {
                "config": f"{r['device']}{' ' + r['kv'] if r.get('kv') else ''} {r['dtype']} {r.get('threads')}t"
                f" {r.get('prompt')}",
                "browser_over_native": r["decode_tokens_per_s"] / n["decode_tokens_per_s"] if n else None,
                "edge_over_wllama": r["decode_tokens_per_s"] / w["decode_tokens_per_s"] if w else None,
                "turn2_reuse_over_fresh": t2 / t2_fresh if t2 and t2_fresh else None,
                "memory_over_download": memory / download if memory and download else None,
                "settled_over_download": settled / download if settled and download else None,
                "revisit_over_download": revisit / download if revisit and download else None,
            }
        )
    return out


def ratio_table(items: list[dict[str, Any]]) -> str:
    lines = [
        "config                          browser/native  edge/wllama  turn2 reuse/fresh  memory/download"
        "  settled/download  revisit/download"
    ]
    for it in items:
        lines.append(
            f"{it['config']:<32}{_fmt(it['browser_over_native'], 2):>14}{_fmt(it['edge_over_wllama'], 2):>13}"
            f"{_fmt(it['turn2_reuse_over_fresh'], 2):>19}{_fmt(it['memory_over_download'], 2):>17}"
            f"{_fmt(it['settled_over_download'], 2):>18}{_fmt(it['revisit_over_download'], 2):>18}"
        )
    lines.append(
        "goals (reported, not asserted): browser/native ≥ 0.5 on CPU, edge/wllama > 1, turn2 reuse/fresh ≤ 0.25,"
        " memory/download ≤ 2 (CPU; revisit: a returning visit's peak)"
    )
    return "\n".join(lines)


COLORS = {"edge-chat": "#3b6fd4", "native-onnxruntime": "#8a8a8a", "native-llama.cpp": "#b0b0b0", "wllama": "#d4823b"}


def _bar_chart(title: str, bars: Iterable[tuple[str, float, str]], unit: str) -> str:
    bars = [b for b in bars if b[1] is not None and math.isfinite(b[1])]
    if not bars:
        return ""
    row_h, label_w, width = 20, 300, 760
    top = max(b[1] for b in bars) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {len(bars) * row_h + 30}" width="{width}"'
        f' role="img"><title>{html.escape(title)}</title>',
        f'<text x="0" y="14" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, (label, value, runner) in enumerate(bars):
        y = 24 + i * row_h
        w = (width - label_w - 70) * value / top
        color = COLORS.get(runner, "#555")
        parts += [
            f'<text x="{label_w - 6}" y="{y + 14}" font-size="12" text-anchor="end">{html.escape(label)}</text>',
            f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row_h - 6}" fill="{color}"/>',
            f'<text x="{label_w + w + 4:.1f}" y="{y + 14}" font-size="12">{value:.2f} {unit}</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)


def html_report(rows: list[dict[str, Any]], items: list[dict[str, Any]], title: str) -> str:
    ok = [r for r in rows if not r.get("error")]

    def label(r: dict[str, Any]) -> str:
        return f"{r['runner']} · {r.get('dtype')} · {r.get('threads')}t · {r.get('prompt')}"

    charts = [
        _bar_chart(
            "decode tokens/s (higher is better)",
            ((label(r), r.get("decode_tokens_per_s"), r["runner"]) for r in ok),
            "tok/s",
        ),
        _bar_chart("prefill tokens/s", ((label(r), r.get("prefill_tokens_per_s"), r["runner"]) for r in ok), "tok/s"),
        _bar_chart("TTFT seconds (lower is better)", ((label(r), r.get("ttft_s"), r["runner"]) for r in ok), "s"),
        _bar_chart(
            "turn-2 TTFT seconds: KV reuse vs fresh prefill",
            (
                (f"{label(r)} · {kind}", r.get(key), r["runner"] if kind == "reuse" else "native-onnxruntime")
                for r in ok
                if r.get("turn2_ttft_s") is not None
                for kind, key in (("reuse", "turn2_ttft_s"), ("fresh", "turn2_ttft_no_reuse_s"))
            ),
            "s",
        ),
        _bar_chart("load seconds (cold)", ((label(r), r.get("load_s"), r["runner"]) for r in ok), "s"),
    ]
    failed = [r for r in rows if r.get("error")]
    return "\n".join(
        [
            "<!doctype html><html lang=en><head><meta charset=utf-8>",
            f"<title>{html.escape(title)}</title>",
            "<style>body{font:14px system-ui,sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em;overflow:auto}"
            "svg{display:block;margin:1.5em 0}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            "<h2>Ratios</h2><pre>" + html.escape(ratio_table(items)) + "</pre>",
            *charts,
            "<h2>All rows</h2><pre>" + html.escape(table(rows)) + "</pre>",
            ("<h2>Failures</h2><pre>" + html.escape("\n".join(str(r["error"]) for r in failed)) + "</pre>")
            if failed
            else "",
            "</body></html>",
        ]
    )
