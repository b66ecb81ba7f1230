"""Research quantizer modes for GGUF-gridded weights, kept for the benchmarks that compare them (not the product).

The product re-encodes grids as "regrid8" (model_prep/quantize/grid.py, used by model_prep/quantize/variants.py).
`quantize_grid` rewrites a whole in-memory graph with that mode or one of two others, which bench/fidelity.py
and bench/webgpu_recipes.py measure against it:

- "fold": 4-bit `d*(q - z)` with z = round(-m/d) in the uint8 zero point; the residual r = m + d*z (|r| <= d/2)
  becomes extra K rows (4-bit, `stages` residual passes) fed by per-block sums of x appended to x.
  y = [x, blocksum(x)] @ W'. Costs a MatMul + Concat per distinct input (8 nodes a Llama layer).
- "add": y = MatMulNBits(x) + blocksum(x) @ R with R in float: exact, 18 extra nodes a Llama layer.

Q8_0 grids become exact 8-bit MatMulNBits in every mode; MatMuls whose weight is no grid are left for the caller's
stock quantizer (`Stats.helper_nodes` lists the blocksum MatMuls it must skip).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_prep.quantize.grid import MIN_GRID_FRACTION, encode_grid, fit_affine_grid, looks_like_grid
from model_prep.quantize.nodes import Emitted, add_block_code, matmul_nbits

MODES = ("regrid8", "fold", "add")


def pack(q: np.ndarray, bits: int) -> np.ndarray:
    """[..., n] uint8 levels → bytes; 4 bits: element 2j in the low nibble of byte j (MatMulNBits' layout)."""
    q = q.astype(np.uint8)
    if bits == 8:
        return q
    if q.shape[-1] % 2:
        q = np.concatenate([q, np.zeros((*q.shape[:-1], 1), np.uint8)], -1)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


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
        if self.mode == "regrid8" or not self.q4_1 or not looks_like_grid(w.T, bs, True, False):
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
