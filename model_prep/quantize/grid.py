"""MatMulNBits for weights that already sit on a per-block quantization grid (GGUF sources), re-encoded exactly.

A GGUF Q4_1 tensor dequantizes every block of 32 input-dim weights of an output column to `d*q + m` (q in 0..15,
d and m fp16). MatMulNBits computes `scale*(q - zp)`, and ORT-web's WebGPU kernel takes uint8 zero points only
(float ones find no WebGPU kernel and the node falls back to WASM), so `m` lands off the 4-bit grid by up to d/2
per block: stock RTN keeps 61 % top-1 on SmolLM2-135M. The modes here (tests/bench/fidelity.py measures them):

- "regrid8" (the default): the block as 8-bit MatMulNBits with step d/k, levels k*q + c and a uint8 zero point,
  k <= 17 picked per block to put m nearest a multiple of d/k. Same node count as stock, 2x the layer bytes.
- "fold": 4-bit `d*(q - z)` with z = round(-m/d) in the uint8 zero point; the residual r = m + d*z (|r| <= d/2)
  becomes extra K rows (4-bit, `stages` residual passes) fed by per-block sums of x appended to x.
  y = [x, blocksum(x)] @ W'. Costs a MatMul + Concat per distinct input (8 nodes a Llama layer).
- "add": y = MatMulNBits(x) + blocksum(x) @ R with R in float: exact, 18 extra nodes a Llama layer.

A symmetric 8-bit grid (GGUF Q8_0: d*q, q in -127..127, SmolLM2's tied embedding/lm_head) becomes MatMulNBits
bits=8 with the default zero point 128: exact in every mode. MatMuls whose weight is no grid (bf16/fp32
sources) are left alone for the caller's stock quantizer.

`encode_grid` is the per-tensor form the variants use (regrid8 / Q8_0: a plain MatMulNBits code that an embedding
table can share with its gathered rows); `quantize_grid` rewrites a whole in-memory graph and also offers the
"fold" and "add" modes that tests/bench/fidelity.py compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..onnx_io.reader import row_chunks
from .blockwise import BlockCode
from .nodes import Emitted, add_block_code, matmul_nbits

GRID_TOL = 1e-3  # |level - round(level)| allowed when testing a block for a grid (fp32 dequantization noise)
MIN_GRID_FRACTION = 0.95  # a tensor with fewer on-grid blocks than this is not a re-encoded grid
MODES = ("regrid8", "fold", "add")


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


def pack(q: np.ndarray, bits: int) -> np.ndarray:
    """[..., n] uint8 levels → bytes; 4 bits: element 2j in the low nibble of byte j (MatMulNBits' layout)."""
    q = q.astype(np.uint8)
    if bits == 8:
        return q
    if q.shape[-1] % 2:
        q = np.concatenate([q, np.zeros((*q.shape[:-1], 1), np.uint8)], -1)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def encode_grid(w_nk: np.ndarray, block_size: int, q4_1: bool = True, q8_0: bool = True) -> BlockCode | None:
    """A grid-shaped weight ([N, K]: rows of K inputs) as an 8-bit MatMulNBits code, or None when it is no grid.

    Q8_0 (d*j) → exact, default zero point 128; Q4_1 (d*q + m) → "regrid8" levels with uint8 zero points. Row
    chunks keep the fits' temporaries small (a 151936-row table would need several GB at once).
    """
    n, k = w_nk.shape
    if k % block_size or n == 0 or not _looks_like_grid(w_nk, block_size, q4_1, q8_0):
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


def quantize_residual(r: np.ndarray, stages: int, bs: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """r: [N, P] (P a multiple of bs) → `stages` 4-bit asymmetric passes (q, scale, zp), each on the rest."""
    out = []
    rest = r.astype(np.float32)
    n, p = r.shape
    for _ in range(stages):
        blocks = rest.reshape(n, p // bs, bs)
        lo, hi = np.minimum(blocks.min(-1), 0), np.maximum(blocks.max(-1), 0)  # 0 exact: padding rows stay 0
        scale = ((hi - lo) / 15).astype(np.float32)
        safe = np.where(scale == 0, 1, scale)
        zp = np.clip(np.rint(-lo / safe), 0, 15)
        q = np.clip(np.rint(blocks / safe[..., None]) + zp[..., None], 0, 15)
        rest = rest - (scale[..., None] * (q - zp[..., None])).reshape(n, p)
        out.append((q.astype(np.uint8), scale, zp.astype(np.uint8)))
    return out


@dataclass
class Stats:
    q4_1: int = 0  # tensors re-encoded from a 4-bit affine grid
    q8_0: int = 0  # tensors kept as exact 8-bit
    skipped: int = 0  # MatMuls with a constant weight on no grid (left for the stock quantizer)
    exact_blocks: int = 0
    blocks: int = 0
    helper_nodes: list[str] = field(default_factory=list)  # blocksum/offset MatMuls: not for any quantizer


class _Builder:
    def __init__(self, bs: int, mode: str, stages: int, accuracy_level: int, q4_1: bool, q8_0: bool):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.bs, self.mode, self.stages, self.accuracy_level = bs, mode, stages, accuracy_level
        self.q4_1, self.q8_0 = q4_1, q8_0
        self.inits: list[TensorProto] = []
        self.blocksums: dict[tuple[str, int, int], str] = {}
        self.indicators: set[str] = set()
        self.stats = Stats()

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def matmul_nbits(self, nodes, a, out, name, k, n, bits, q, scale, zp=None) -> None:
        inputs = [a, self.init(f"{name}_Q{bits}", pack(q, bits)), self.init(f"{name}_scales", scale)]
        if zp is not None:
            inputs.append(self.init(f"{name}_zero_points", pack(zp, bits)))
        attrs = {"K": k, "N": n, "bits": bits, "block_size": self.bs}
        if self.accuracy_level:
            attrs["accuracy_level"] = self.accuracy_level
        nodes.append(
            helper.make_node("MatMulNBits", inputs, [out], name=f"{name}_Q{bits}", domain="com.microsoft", **attrs)
        )

    def blocksum(self, nodes, x: str, k: int, copies: int, width: int) -> str:
        """x @ a 0/1 [k, copies*width] matrix: column c*width + b sums input block b; "fold" appends it to x."""
        key = (x, copies, width)
        if key not in self.blocksums:
            ind_name = f"blocksum_{k}x{copies}x{width}"  # one per shape, shared by every layer
            if ind_name not in self.indicators:
                ind = np.zeros((k, copies * width), np.float32)
                for c in range(copies):
                    ind[np.arange(k), c * width + np.arange(k) // self.bs] = 1
                self.indicators.add(self.init(ind_name, ind))
            tag = f"{_safe(x)}_blocksum{copies}x{width}"
            out = f"{tag}_out"
            nodes.append(helper.make_node("MatMul", [x, ind_name], [out], name=tag))
            self.stats.helper_nodes.append(tag)
            if self.mode == "fold":
                nodes.append(helper.make_node("Concat", [x, out], [f"{tag}_cat"], name=f"{tag}_concat", axis=-1))
                out = f"{tag}_cat"
            self.blocksums[key] = out
        return self.blocksums[key]

    def convert(self, node: onnx.NodeProto, w: np.ndarray) -> list[onnx.NodeProto] | None:
        k, n = w.shape
        bs = self.bs
        if k % bs or n == 0:
            return None
        name = node.name.strip("/").replace("/", "_") or _safe(node.input[1])
        x, out = node.input[0], node.output[0]
        nodes: list[onnx.NodeProto] = []

        code = encode_grid(w.T, bs, q4_1=self.q4_1 and self.mode == "regrid8", q8_0=self.q8_0)
        if code is not None:  # Q8_0 in every mode, Q4_1 in regrid8: one plain 8-bit MatMulNBits
            self._count(code.exact_blocks, code.blocks, code.kind)
            code.accuracy_level = self.accuracy_level
            emit = Emitted()
            matmul_nbits(emit, x, out, f"{name}_Q{code.bits}", code, add_block_code(emit, name, code))
            self.inits += emit.initializers
            return emit.nodes
        if self.mode == "regrid8" or not self.q4_1 or not _looks_like_grid(w.T, bs, True, False):
            self.stats.skipped += 1
            return None
        grid = fit_affine_grid(np.ascontiguousarray(w.T).reshape(n, k // bs, bs))
        if grid.exact.mean() < MIN_GRID_FRACTION:
            self.stats.skipped += 1
            return None
        self._count(int(grid.exact.sum()), grid.exact.size, "q4_1")

        z = np.clip(np.rint(-grid.offset / grid.scale), 0, 15)
        resid = (grid.offset + grid.scale * z).astype(np.float32)  # [N, nb], |resid| <= scale/2 on grids
        nb = k // bs
        if self.mode == "add":
            main = f"{out}_grid"
            self.matmul_nbits(nodes, x, main, name, k, n, 4, grid.q, grid.scale, z.astype(np.uint8))
            sums = self.blocksum(nodes, x, k, 1, nb)
            corr = f"{out}_offsets"
            nodes.append(
                helper.make_node("MatMul", [sums, self.init(f"{name}_offsets", resid.T.copy())], [corr], name=corr)
            )
            self.stats.helper_nodes.append(corr)
            nodes.append(helper.make_node("Add", [main, corr], [out], name=f"{name}_add"))
            return nodes
        width = -(-nb // bs) * bs  # fold: residual rows appended to K, `stages` passes of whole blocks
        padded = np.zeros((n, width), np.float32)
        padded[:, :nb] = resid
        parts = [(grid.q, grid.scale, z.astype(np.uint8)), *quantize_residual(padded, self.stages, bs)]
        q_all, s_all, z_all = (np.concatenate(p, 1) for p in zip(*parts, strict=True))
        xa = self.blocksum(nodes, x, k, self.stages, width)
        self.matmul_nbits(nodes, xa, out, name, k + width * self.stages, n, 4, q_all, s_all, z_all)
        return nodes

    def _count(self, exact_blocks: int, blocks: int, kind: str) -> None:
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        self.stats.exact_blocks += exact_blocks
        self.stats.blocks += blocks


def _looks_like_grid(w_nk: np.ndarray, bs: int, q4_1: bool, q8_0: bool, sample: int = 256) -> bool:
    """A cheap look at a few blocks first: bf16/fp32 tensors (no grid at all) skip the full fits."""
    n, k = w_nk.shape
    picks = np.linspace(0, n * (k // bs) - 1, min(sample, n * (k // bs))).astype(np.int64)
    rows = np.stack([np.asarray(w_nk[p // (k // bs), (p % (k // bs)) * bs :][:bs], np.float32) for p in picks])[None]
    return bool(
        (q8_0 and fit_symmetric_grid8(rows)[2].mean() >= MIN_GRID_FRACTION / 2)
        or (q4_1 and fit_affine_grid(rows).exact.mean() >= MIN_GRID_FRACTION / 2)
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def quantize_grid(
    model: onnx.ModelProto,
    block_size: int = 32,
    mode: str = "regrid8",
    stages: int = 2,
    accuracy_level: int = 0,
    q4_1: bool = True,
    q8_0: bool = True,
) -> tuple[onnx.ModelProto, Stats]:
    """Replace MatMuls whose constant 2-D fp32 weight is grid-shaped by MatMulNBits (in place); others stay."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    builder = _Builder(block_size, mode, stages, accuracy_level, q4_1, q8_0)
    new_nodes, replaced = [], set()
    for node in graph.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if w is not None and len(w.dims) == 2 and w.data_type == TensorProto.FLOAT:
            converted = builder.convert(node, numpy_helper.to_array(w))
            if converted is not None:
                new_nodes.extend(converted)
                replaced.add(w.name)
                continue
        new_nodes.append(node)
    still_used = {i for n in new_nodes for i in n.input}
    keep = [i for i in graph.initializer if i.name not in replaced or i.name in still_used]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep + builder.inits)
    if builder.inits and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model, builder.stats
