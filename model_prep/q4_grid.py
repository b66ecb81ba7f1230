"""Grid-aware 4-bit MatMulNBits: re-encodes weights that already sit on a per-block affine 4-bit grid exactly.

A GGUF Q4_1 source dequantizes every block of 32 input-dim weights of an output column to `d*q + m`
(q in 0..15, d and m fp16). MatMulNBits computes `scale*(q - zp)` with an integer zp (WebGPU accepts uint8 zero
points only), so `m` is off the representable grid by up to d/2 and RTN loses most of the model. Here each block
is re-encoded as `d*(q - z) + r` with z = round(-m/d) in the uint8 zero point and the residual
`r = m + d*z` (|r| <= d/2) carried by a per-block correction:

    y = x @ (d*(q - z)) + blocksum(x) @ R          blocksum(x)[b] = sum of x over input block b

Two ways to feed the correction (`fold`):
- "concat" (default): blocksum(x) (one small MatMul against a 0/1 matrix per distinct input, shared by q/k/v
  and gate/up) is appended to x, and R becomes extra K rows of the same MatMulNBits, 4-bit quantized in
  `stages` residual passes. One MatMul + one Concat per distinct input; nothing between MatMulNBits and its
  consumers, so EP fusions that match MatMulNBits outputs still apply.
- "add": y += MatMul(blocksum(x), R) with R in float (exact), one MatMul + Add per weight.

A symmetric 8-bit grid (GGUF Q8_0: `d*q`, q in -128..127; SmolLM2's tied embedding/lm_head) is kept as
MatMulNBits bits=8 with the default zero point 128, which is exact. Tensors that are not grid-shaped (bf16 or
fp32 sources) get plain symmetric RTN, the stock recipe, with no extra nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GRID_TOL = 1e-3  # |level - round(level)| allowed when testing whether a block is on a grid (fp32 dequant noise)
MIN_GRID_FRACTION = 0.95  # a tensor with fewer exact blocks than this is not a re-encoded grid: plain RTN


@dataclass
class Grid:
    """w[n, b, i] = scale[n, b] * q[n, b, i] + offset[n, b]; `exact[n, b]` where that equals the input."""

    q: np.ndarray  # [N, nb, bs] uint8
    scale: np.ndarray  # [N, nb] float32
    offset: np.ndarray  # [N, nb] float32
    exact: np.ndarray  # [N, nb] bool


def fit_affine_grid(blocks: np.ndarray, levels: int = 16) -> Grid:
    """Find, per block, the coarsest step with which every value is `min + step*k`, k in 0..levels-1.

    Blocks that fit no such grid get min/max asymmetric rounding (exact=False).
    """
    blocks = blocks.astype(np.float32)
    lo, hi = blocks.min(-1), blocks.max(-1)
    span = hi - lo
    q = np.zeros(blocks.shape, np.uint8)
    scale = (span / (levels - 1)).astype(np.float32)
    exact = span == 0  # constant blocks: scale*0 + offset
    scale[exact] = 0
    todo = np.flatnonzero(~exact.reshape(-1))
    flat_blocks = blocks.reshape(-1, blocks.shape[-1])
    flat_lo, flat_span = lo.reshape(-1), span.reshape(-1)
    flat_q, flat_scale, flat_exact = q.reshape(-1, blocks.shape[-1]), scale.reshape(-1), exact.reshape(-1)
    for j in range(levels - 1, 0, -1):
        if todo.size == 0:
            break
        step = flat_span[todo] / j
        r = (flat_blocks[todo] - flat_lo[todo, None]) / step[:, None]
        k = np.rint(r)
        ok = (np.abs(r - k) <= GRID_TOL).all(-1)
        hit = todo[ok]
        flat_q[hit] = k[ok].astype(np.uint8)
        flat_scale[hit] = step[ok]
        flat_exact[hit] = True
        todo = todo[~ok]
    if todo.size:  # off-grid blocks: min/max asymmetric
        step = flat_span[todo] / (levels - 1)
        flat_q[todo] = np.clip(np.rint((flat_blocks[todo] - flat_lo[todo, None]) / step[:, None]), 0, levels - 1)
    return Grid(q, scale, lo.astype(np.float32), exact)


def fit_symmetric_grid8(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q8_0-shaped blocks: w = d*q, q in -127..127, d = absmax/127. Returns (q+128 as uint8, d, exact)."""
    blocks = blocks.astype(np.float32)
    d = (np.abs(blocks).max(-1) / 127).astype(np.float32)
    safe = np.where(d == 0, 1, d)
    r = blocks / safe[..., None]
    k = np.clip(np.rint(r), -128, 127)
    exact = (np.abs(r - k) <= GRID_TOL).all(-1)
    return (k + 128).astype(np.uint8), d, exact


def pack(q: np.ndarray, bits: int) -> np.ndarray:
    """[..., n] uint8 levels → [..., n*bits/8] bytes, element 2j in the low nibble of byte j for 4 bits."""
    if bits == 8:
        return q.astype(np.uint8)
    q = q.astype(np.uint8)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def rtn_symmetric(w: np.ndarray, bs: int) -> tuple[np.ndarray, np.ndarray]:
    """The stock recipe (ORT's own symmetric RTN kernel): packed [N, nb, bs/2] bytes and scales [N, nb]."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    k, n = w.shape
    packed = np.zeros((n, k // bs, bs // 2), np.uint8)
    scales = np.zeros((n, k // bs), np.float32)
    zp = np.zeros((n, (k // bs + 1) // 2), np.uint8)
    quantize_matmul_4bits(packed, np.ascontiguousarray(w, np.float32), scales, zp, bs, n, k, True)
    return packed, scales


def quantize_residual(r: np.ndarray, stages: int, bs: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """r: [N, P] (P a multiple of bs) → `stages` 4-bit asymmetric passes (q, scale, zp) with 0 exact."""
    out = []
    rest = r.astype(np.float32)
    n, p = r.shape
    for _ in range(stages):
        blocks = rest.reshape(n, p // bs, bs)
        lo = np.minimum(blocks.min(-1), 0)
        hi = np.maximum(blocks.max(-1), 0)
        scale = ((hi - lo) / 15).astype(np.float32)
        safe = np.where(scale == 0, 1, scale)
        zp = np.clip(np.rint(-lo / safe), 0, 15)
        q = np.clip(np.rint(blocks / safe[..., None]) + zp[..., None], 0, 15)
        rest = rest - (scale[..., None] * (q - zp[..., None])).reshape(n, p)
        out.append((q.astype(np.uint8), scale, zp.astype(np.uint8)))
    return out


def regrid8(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 4-bit affine grid as 8-bit MatMulNBits with uint8 zp: scale d/k, levels k*q + c, k in 1..17 chosen per
    block to put the offset closest to a multiple of d/k (offset error <= d/(2k) instead of d/2)."""
    safe = np.where(grid.scale == 0, 1, grid.scale)
    qmax = grid.q.max(-1).astype(np.float64)
    best_err = np.full(grid.scale.shape, np.inf)
    best_k = np.ones(grid.scale.shape)
    for k in range(1, 18):
        u = grid.offset.astype(np.float64) * k / safe  # offset in units of the 8-bit step
        z = np.clip(-np.rint(u), 0, 255)
        c = np.rint(u) + z  # level of q=0
        feasible = (c >= 0) & (c + k * qmax <= 255)
        err = np.where(feasible, np.abs(u + z - c) / k, np.inf)
        better = err < best_err - 1e-12
        best_err = np.where(better, err, best_err)
        best_k = np.where(better, k, best_k)
    u = grid.offset.astype(np.float64) * best_k / safe
    z = np.clip(-np.rint(u), 0, 255)
    c = np.rint(u) + z
    q8 = np.clip(best_k[..., None] * grid.q + c[..., None], 0, 255).astype(np.uint8)
    scale = (grid.scale / best_k).astype(np.float32)
    return q8, scale, z.astype(np.uint8)


@dataclass
class Stats:
    grid4: int = 0
    grid8: int = 0
    rtn: int = 0
    exact_blocks: int = 0
    blocks: int = 0


class _Builder:
    def __init__(self, accuracy_level: int, accuracy_level8: int, fold: str, stages: int, bs: int, grid4, grid8):
        self.grid4, self.grid8 = grid4, grid8
        self.accuracy_level, self.accuracy_level8 = accuracy_level, accuracy_level8
        self.fold = fold
        self.stages = stages
        self.bs = bs
        self.inits: list[TensorProto] = []
        self.blocksums: dict[tuple[str, int, int], str] = {}
        self.indicators: set[str] = set()
        self.stats = Stats()

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def matmul_nbits(self, nodes, a, out, name, k, n, bits, packed, scale, zp=None, bs=None):
        bs = bs or self.bs
        inputs = [a, self.init(f"{name}_Q{bits}", packed), self.init(f"{name}_scales", scale)]
        if zp is not None:
            inputs.append(self.init(f"{name}_zero_points", zp))
        attrs = {"K": k, "N": n, "bits": bits, "block_size": bs}
        level = self.accuracy_level8 if bits == 8 else self.accuracy_level
        if level:
            attrs["accuracy_level"] = level
        nodes.append(
            helper.make_node("MatMulNBits", inputs, [out], name=f"{name}_Q{bits}", domain="com.microsoft", **attrs)
        )

    def blocksum(self, nodes, x: str, k: int, copies: int, width: int) -> str:
        """x @ 0/1 matrix [k, copies*width]: column c*width + b sums input block b (b < k/bs), others are 0."""
        key = (x, copies, width)
        if key not in self.blocksums:
            ind_name = f"blocksum_{k}x{copies}x{width}"  # one 0/1 matrix per shape, shared by all layers
            if ind_name not in self.indicators:
                ind = np.zeros((k, copies * width), np.float32)
                for c in range(copies):
                    ind[np.arange(k), c * width + np.arange(k) // self.bs] = 1
                self.indicators.add(self.init(ind_name, ind))
            tag = f"{_safe(x)}_blocksum{copies}x{width}"
            out = f"{tag}_out"
            nodes.append(helper.make_node("MatMul", [x, ind_name], [out], name=tag))
            if self.fold == "concat":
                cat = f"{tag}_cat"
                nodes.append(helper.make_node("Concat", [x, out], [cat], name=f"{tag}_concat", axis=-1))
                out = cat
            self.blocksums[key] = out
        return self.blocksums[key]

    def convert(self, node: onnx.NodeProto, w: np.ndarray) -> list[onnx.NodeProto] | None:
        k, n = w.shape
        bs = self.bs
        if k % bs or n == 0:
            return None
        nodes: list[onnx.NodeProto] = []
        name = node.name.strip("/").replace("/", "_") or _safe(node.input[1])
        x, out = node.input[0], node.output[0]
        wt = np.ascontiguousarray(w.T)
        blocks = wt.reshape(n, k // bs, bs)
        self.stats.blocks += blocks.shape[0] * blocks.shape[1]

        q8, d8, exact8 = fit_symmetric_grid8(blocks)
        if self.grid8 and exact8.mean() >= MIN_GRID_FRACTION:
            self.stats.grid8 += 1
            self.stats.exact_blocks += int(exact8.sum())
            self.matmul_nbits(nodes, x, out, name, k, n, 8, pack(q8, 8), d8)
            return nodes

        grid = fit_affine_grid(blocks) if self.grid4 else None
        if grid is None or grid.exact.mean() < MIN_GRID_FRACTION:
            self.stats.rtn += 1
            packed, scale = rtn_symmetric(w, bs)
            self.matmul_nbits(nodes, x, out, name, k, n, 4, packed, scale)
            return nodes

        self.stats.grid4 += 1
        self.stats.exact_blocks += int(grid.exact.sum())
        if self.fold == "q8":
            q8, scale8, zp8 = regrid8(grid)
            self.matmul_nbits(nodes, x, out, name, k, n, 8, pack(q8, 8), scale8, zp8)
            return nodes
        safe = np.where(grid.scale == 0, 1, grid.scale)
        z = np.clip(np.rint(-grid.offset / safe), 0, 15)
        resid = (grid.offset + grid.scale * z).astype(np.float32)  # [N, nb]
        zp = z.astype(np.uint8)
        if zp.shape[1] % 2:
            zp = np.concatenate([zp, np.zeros((n, 1), np.uint8)], 1)
        zp_packed = pack(zp, 4)
        nb = k // bs
        if self.fold == "add":
            main = f"{out}_grid"
            self.matmul_nbits(nodes, x, main, name, k, n, 4, pack(grid.q, 4), grid.scale, zp_packed)
            s = self.blocksum(nodes, x, k, 1, nb)
            corr = f"{out}_corr"
            nodes.append(helper.make_node("MatMul", [s, self.init(f"{name}_resid", resid.T.copy())], [corr]))
            nodes.append(helper.make_node("Add", [main, corr], [out], name=f"{name}_add"))
            return nodes
        # concat: residual rows appended to K, quantized in `stages` passes of width pad(nb)
        width = _pad(nb, bs)
        xa = self.blocksum(nodes, x, k, self.stages, width)
        padded = np.zeros((n, width), np.float32)
        padded[:, :nb] = resid
        q_parts, s_parts, z_parts = [grid.q], [grid.scale], [z.astype(np.uint8)]
        for q, scale, zr in quantize_residual(padded, self.stages, bs):
            q_parts.append(q)
            s_parts.append(scale)
            z_parts.append(zr)
        q_all = np.concatenate(q_parts, 1)
        z_all = np.concatenate(z_parts, 1)
        if z_all.shape[1] % 2:
            z_all = np.concatenate([z_all, np.zeros((n, 1), np.uint8)], 1)
        scale_all = np.concatenate(s_parts, 1)
        kk = k + width * self.stages
        self.matmul_nbits(nodes, xa, out, name, kk, n, 4, pack(q_all, 4), scale_all, pack(z_all, 4))
        return nodes


def _pad(n: int, bs: int) -> int:
    return -(-n // bs) * bs


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def quantize_grid(
    model: onnx.ModelProto,
    block_size: int = 32,
    accuracy_level: int = 4,
    accuracy_level8: int | None = None,
    fold: str = "concat",
    stages: int = 2,
    grid4: bool = True,
    grid8: bool = True,
) -> tuple[onnx.ModelProto, Stats]:
    """Replace every MatMul with a constant 2-D fp32 weight by MatMulNBits (grid-exact where possible)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    level8 = accuracy_level if accuracy_level8 is None else accuracy_level8
    builder = _Builder(accuracy_level, level8, fold, stages, block_size, grid4, grid8)
    new_nodes, used = [], set()
    for node in graph.node:
        w_init = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if w_init is not None and len(w_init.dims) == 2 and w_init.data_type == TensorProto.FLOAT:
            converted = builder.convert(node, numpy_helper.to_array(w_init))
            if converted is not None:
                new_nodes.extend(converted)
                used.add(w_init.name)
                continue
        new_nodes.append(node)
    still_used = {i for n in new_nodes for i in n.input}
    keep = [i for i in graph.initializer if i.name not in used or i.name in still_used]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep + builder.inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model, builder.stats
