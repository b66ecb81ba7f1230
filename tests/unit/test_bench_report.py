"""bench/report.py: the WebGPU calls per decode step (the rows' `gpu` object) get a table of their own."""

from __future__ import annotations

from bench import report

GPU = {
    "buffers_per_step": 3,
    "submits_per_step": 4,
    "dispatches_per_step": 31,
    "readbacks_per_step": 1,
    "readback_bytes_per_step": 1536,
    "writes_per_step": 31,
    "write_bytes_per_step": 1648,
    "encode_ms_per_step": 7.128,
    "steps": 11,
}


def row(**extra: object) -> dict:
    return {"runner": "edge-chat", "model": "tiny-llama", "dtype": "q4", "prompt": "short", "device": "webgpu", **extra}


def test_gpu_rows_get_their_table_beside_the_main_one() -> None:
    rows = [row(kv="static", gpu=GPU), row(kv="dynamic", gpu={**GPU, "buffers_per_step": 4, "readbacks_per_step": 2})]
    text = report.table(rows)
    assert "WebGPU calls per decode step" in text
    lines = report.gpu_table(rows).splitlines()
    assert lines[0].split()[:8] == ["model", "dtype", "prompt", "kv", "prompt", "tok", "buffers", "submits"]
    assert lines[2].split()[3:6] == ["static", "–", "3.00"]
    assert lines[3].split()[3:6] == ["dynamic", "–", "4.00"]
    assert "7.13" in lines[2]


def test_no_gpu_table_without_counted_rows() -> None:
    rows = [row(device="wasm")]
    assert report.gpu_table(rows) == ""
    assert "WebGPU" not in report.table(rows)
