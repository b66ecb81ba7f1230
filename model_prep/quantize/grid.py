"""GGUF-gridded weights re-encoded for MatMulNBits near-exactly: the 4-bit recipe of the q4 / q4f16 variants.

A GGUF Q4_1 tensor dequantizes every block of 32 input-dim weights of an output column to `d*q + m` (q in 0..15,
d and m fp16). MatMulNBits computes `scale*(q - zp)`, and ORT-web's WebGPU kernel takes uint8 zero points only
(float ones find no WebGPU kernel and the node falls back to WASM), so `m` lands off the 4-bit grid by up to d/2
per block: stock RTN keeps 61 % top-1 on SmolLM2-135M. Here ("regrid8") the block becomes 8-bit MatMulNBits with
step d/k, levels k*q + c and a uint8 zero point, k <= 17 picked per block to put m nearest a multiple of d/k: same
node count as stock, 2x the layer bytes. A symmetric 8-bit grid (GGUF Q8_0: d*q, q in -127..127, SmolLM2's tied
embedding/lm_head) becomes MatMulNBits bits=8 with the default zero point 128, exactly.

`encode_grid` returns None for a weight on no grid (bf16/fp32 sources), which then gets stock RTN. The other modes
tried (4-bit with offsets folded into extra K rows, or added by a float MatMul) live in bench/quant_research.py;
bench/fidelity.py measures them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..onnx_io.reader import row_chunks
from .blockwise import BlockCode

GRID_TOL = 1e-3  # |level - round(level)| allowed when testing a block for a grid (fp32 dequantization noise)
MIN_GRID_FRACTION = 0.95  # a tensor with fewer on-grid blocks than this is not a re-encoded grid


@dataclass
class Grid:
    """w[n, b, i] = scale[n, b] * q[n, b, i] + offset[n, b]; `exact[n, b]` where that reproduces the input."""

    q: np.ndarray  # [N, nb, bs] uint8
    scale: np.ndarray  # [N, nb] float32, > 0
    offset: np.ndarray  # [N, nb] float32
    exact: np.ndarray  # [N, nb] bool


def fit_affine_grid(blocks: np.ndarray, levels: int = 16) -> Grid:
    """Per block, the coarsest step with which every value is `min + step*j`, j in 0..levels-1.

    Blocks on no such grid get min/max asymmetric rounding (exact=False).
    """
    blocks = blocks.astype(np.float32)
    bs = blocks.shape[-1]
    lo, hi = blocks.min(-1), blocks.max(-1)
    span = hi - lo
    flat = blocks.reshape(-1, bs)
    flat_lo, flat_span = lo.reshape(-1), span.reshape(-1)
    q = np.zeros(flat.shape, np.uint8)
    scale = flat_span / (levels - 1)
    exact = flat_span == 0
    # constant blocks: q = 0, any positive scale (|value| keeps -offset/scale an integer for the zero point)
    scale[exact] = np.where(flat_lo[exact] == 0, 1, np.abs(flat_lo[exact]))
    todo = np.flatnonzero(~exact)
    for j in range(levels - 1, 0, -1):
        if todo.size == 0:
            break
        step = flat_span[todo] / j
        r = (flat[todo] - flat_lo[todo, None]) / step[:, None]
        k = np.rint(r)
        ok = (np.abs(r - k) <= GRID_TOL).all(-1)
        hit = todo[ok]
        q[hit] = k[ok]
        scale[hit] = step[ok]
        exact[hit] = True
        todo = todo[~ok]
    if todo.size:
        step = flat_span[todo] / (levels - 1)
        q[todo] = np.clip(np.rint((flat[todo] - flat_lo[todo, None]) / step[:, None]), 0, levels - 1)
    shape = blocks.shape[:-1]
    return Grid(q.reshape(blocks.shape), scale.astype(np.float32).reshape(shape), lo, exact.reshape(shape))


def fit_symmetric_grid8(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q8_0-shaped blocks: w = d*j, j in -127..127, d = absmax/127. Returns (j + 128 as uint8, d, exact)."""
    blocks = blocks.astype(np.float32)
    d = (np.abs(blocks).max(-1) / 127).astype(np.float32)
    r = blocks / np.where(d == 0, 1, d)[..., None]
    k = np.clip(np.rint(r), -128, 127)
    exact = (np.abs(r - k) <= GRID_TOL).all(-1)
    return (k + 128).astype(np.uint8), d, exact


def regrid8(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 4-bit affine grid as 8-bit levels with a uint8 zero point: w = (d/k)*(k*q + c - z).

    Per block, k in 1..17 (15k <= 255) is the one that leaves the offset closest to a multiple of d/k: the
    levels stay exact and the offset error is |m - (c - z)*d/k|, typically d/100 or less instead of d/2.
    """
    offset = grid.offset.astype(np.float64)
    scale = grid.scale.astype(np.float64)
    qmax = grid.q.max(-1).astype(np.float64)
    best_err = np.full(scale.shape, np.inf)
    best_k = np.ones(scale.shape)
    for k in range(1, 18):
        u = offset * k / scale  # the offset in units of the 8-bit step
        z = np.clip(-np.rint(u), 0, 255)
        c = np.rint(u) + z  # the level of q = 0
        feasible = (c >= 0) & (c + k * qmax <= 255)
        err = np.where(feasible, np.abs(u + z - c) / k, np.inf)
        better = err < best_err - 1e-12
        best_err = np.where(better, err, best_err)
        best_k = np.where(better, k, best_k)
    u = offset * best_k / scale
    z = np.clip(-np.rint(u), 0, 255)
    c = np.rint(u) + z
    q8 = np.clip(best_k[..., None] * grid.q + c[..., None], 0, 255).astype(np.uint8)
    return q8, (scale / best_k).astype(np.float32), z.astype(np.uint8)


def encode_grid(w_nk: np.ndarray, block_size: int, q4_1: bool = True, q8_0: bool = True) -> BlockCode | None:
    """A grid-shaped weight ([N, K]: rows of K inputs) as an 8-bit MatMulNBits code, or None when it is no grid.

    Q8_0 (d*j) → exact, default zero point 128; Q4_1 (d*q + m) → "regrid8" levels with uint8 zero points. Row
    chunks keep the fits' temporaries small (a 151936-row table would need several GB at once).
    """
    n, k = w_nk.shape
    if k % block_size or n == 0 or not looks_like_grid(w_nk, block_size, q4_1, q8_0):
        return None
    nb = k // block_size
    for kind in ("q8_0", "q4_1"):
        if not {"q8_0": q8_0, "q4_1": q4_1}[kind]:
            continue
        levels, scales, zps, exact = [], [], [], 0
        for rows in row_chunks(n, k):
            blocks = np.asarray(w_nk[rows], dtype=np.float32).reshape(-1, nb, block_size)
            if kind == "q8_0":
                q8, scale8, ok = fit_symmetric_grid8(blocks)
            else:
                grid = fit_affine_grid(blocks)
                q8, scale8, zp8 = regrid8(grid)
                ok = grid.exact
                zps.append(zp8)
            levels.append(q8)
            scales.append(scale8)
            exact += int(ok.sum())
        if exact >= MIN_GRID_FRACTION * n * nb:
            zero_points = np.concatenate(zps) if zps else None
            return BlockCode(8, block_size, k, np.concatenate(levels), np.concatenate(scales), zero_points, kind, exact)
    return None


def looks_like_grid(w_nk: np.ndarray, bs: int, q4_1: bool, q8_0: bool, sample: int = 256) -> bool:
    """A cheap look at a few blocks first: bf16/fp32 tensors (no grid at all) skip the full fits."""
    n, k = w_nk.shape
    picks = np.linspace(0, n * (k // bs) - 1, min(sample, n * (k // bs))).astype(np.int64)
    rows = np.stack([np.asarray(w_nk[p // (k // bs), (p % (k // bs)) * bs :][:bs], np.float32) for p in picks])[None]
    return bool(
        (q8_0 and fit_symmetric_grid8(rows)[2].mean() >= MIN_GRID_FRACTION / 2)
        or (q4_1 and fit_affine_grid(rows).exact.mean() >= MIN_GRID_FRACTION / 2)
    )
