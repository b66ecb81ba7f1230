"""Variants of an fp32 graph, named the way Transformers.js looks them up (`model_q4.onnx`, `model_q4f16.onnx`,
`model_quantized.onnx`).

One weight at a time: the fp32 graph is read without its external data (model_prep/onnx_io/reader.py), each MatMul
weight or embedding table is read, quantized and dropped before the next, and the variant (small enough to be one
inline file) is built in memory and written one initializer at a time (model_prep/onnx_io/writer.py). Peak RSS on
Qwen3-0.6B: 0.9 GB (q8; its embedding table's stage), where onnx.load + onnxruntime's whole-model quantizers took
12 GB.

- q4 / q4f16 (WebGPU, and loadable on WASM): MatMulNBits with uint8 zero points only (ORT-web's WebGPU kernel
  rejects float ones). GGUF grids are re-encoded near-exactly by model_prep/quantize/grid.py, other weights get stock
  symmetric RTN from onnxruntime's own kernel. The token embedding is the same block code gathered with plain ONNX
  ops (model_prep/quantize/nodes.gather_block_rows; GatherBlockQuantized has no kernel in ORT-web's WASM build), and a
  tied lm_head's MatMulNBits reads the same bytes: the table is stored once.
- q8 (WASM): quantize_dynamic's MatMulInteger pattern, because 4-bit MatMulNBits is 3-35x slower than fp32 or
  MatMulInteger in ORT's WASM backend. Its embedding is an int8 table dequantized after a plain Gather; a tied
  lm_head reads the same bytes as MatMulInteger(x, Transpose(table)).

I/O stays fp32 in every variant (so each Transformers.js path feeds them the same tensors) but the fp16 variants'
KV cache, which stays fp16 (see to_fp16).
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import NodeProto, helper

from ..folder import variant_path
from ..onnx_io import writer
from ..onnx_io.reader import SourceGraph
from . import nodes as qn
from .blockwise import BlockCode, rtn
from .grid import encode_grid
from .int8 import int8_columns, int8_rows

# Grid re-encoding (model_prep/quantize/grid.py), measured on SmolLM2-135M (Q4_1 source) by bench/fidelity.py:
# 99.5 % top-1 and +0.2 % perplexity vs 61 % / +24 % for stock RTN, with the stock graph's node count.
# accuracy_level 0: fp activations (int8 ones cost 4 points of top-1 on exact weights).
GRID_RECIPE = {"mode": "regrid8", "accuracy_level": 0}
# accuracy_level 4 lets native CPU use int8 compute (3x faster decode) and WebGPU its DP4A kernels; int8
# activations cost little next to RTN's weight error, but 4 points of top-1 on exact grid weights.
RTN_ACCURACY_LEVEL = 4

KV_PREFIXES = ("past_key_values.", "present.")  # the fp16 variants keep their KV cache fp16 (see to_fp16)


def write_variants(
    fp32: dict[str, Path], dtypes: tuple[str, ...], onnx_dir: Path, block_size: int
) -> dict[str, dict[str, Path]]:
    """{dtype: {sub-model: graph}}: every sub-model quantized to every dtype; fp32 is the exported graph itself."""
    return {
        d: {name: path if d == "fp32" else write_variant(path, d, onnx_dir, block_size) for name, path in fp32.items()}
        for d in dtypes
    }


def write_variant(fp32_path: Path, dtype: str, out_dir: Path, block_size: int = 32) -> Path:
    """Quantize the fp32 graph to `dtype` (q4, q4f16 or q8) beside it in `out_dir`; returns the variant's path."""
    if dtype == "q4":
        model, summary = quantize_q4(fp32_path, block_size)
    elif dtype == "q4f16":
        model, summary = quantize_q4(fp32_path, block_size)
        model = to_fp16(model)
    elif dtype == "q8":
        model, summary = quantize_q8(fp32_path)
    else:
        raise ValueError(f"no quantizer for dtype {dtype!r}: q4, q4f16 or q8")
    out = variant_path(fp32_path, dtype, out_dir)
    writer.save(model, out)  # removes a half-written file itself
    del model
    print(f"  {out.name}: {out.stat().st_size / 1e6:.1f} MB; {summary}", file=sys.stderr)
    return out


def quantize_q4(fp32_path: Path, block_size: int) -> tuple[onnx.ModelProto, Summary]:
    return _Q4(SourceGraph(fp32_path), block_size).run()


def quantize_q8(fp32_path: Path) -> tuple[onnx.ModelProto, Summary]:
    return _Q8(SourceGraph(fp32_path)).run()


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Everything float becomes fp16 but the graph's I/O, except the KV cache: past/present are fp16 tensors, as in
    onnx-community's q4f16 exports (Transformers.js allocates the cache from the input metadata's type), so no
    layer casts its whole cache on every step. MatMulNBits scales follow (the converter only skips its block list,
    plain ONNX ops), and so do the embedding's levels table and scales, hence its rows."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    keep = [
        v.name
        for v in [*model.graph.input, *model.graph.output]
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and not v.name.startswith(KV_PREFIXES)
    ]
    return convert_float_to_float16(model, keep_io_types=keep, disable_shape_infer=True)


@dataclass
class Summary:
    """What a variant's weights became: printed by write_variant."""

    weights: Counter = field(default_factory=Counter)  # kind → MatMul weights
    tables: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{n} {kind}" for kind, n in sorted(self.weights.items())] + self.tables
        return ", ".join(parts) or "nothing quantized"


@dataclass
class Table:
    """An embedding [vocab, hidden]: Gather(table, ids); tied when lm_head is MatMul(h, Transpose(table))."""

    name: str
    gathers: list[NodeProto]
    transposes: list[NodeProto]
    lm_heads: list[NodeProto]

    @property
    def tied(self) -> bool:
        return bool(self.lm_heads)


def find_tables(src: SourceGraph, usable: Callable[[tuple[int, ...]], bool]) -> dict[str, Table]:
    """Float tables read only by Gather on axis 0 and by Transpose(perm [1, 0]) feeding MatMuls' B.

    An untied table counts when its Gathers index it with a graph input (input_ids): position tables and other
    constants gathered with computed indices stay float. `usable(shape)` says whether the variant can encode it.
    """
    graph = src.graph
    uses: dict[str, list[tuple[NodeProto, int]]] = defaultdict(list)
    for node in graph.node:
        for i, name in enumerate(node.input):
            uses[name].append((node, i))
    pinned = _subgraph_names(graph) | {o.name for o in graph.output}  # names something else needs as they are
    graph_inputs = {i.name for i in graph.input}
    tables = {}
    for name, readers in uses.items():
        if not src.is_float_matrix(name) or name in pinned or not usable(tuple(src.initializers[name].dims)):
            continue
        table = Table(name, [], [], [])
        for node, i in readers:
            if node.op_type == "Gather" and i == 0 and _attr(node, "axis", 0) == 0:
                table.gathers.append(node)
                continue
            heads = uses.get(node.output[0], []) if node.op_type == "Transpose" else []
            if _attr(node, "perm", [1, 0]) == [1, 0] and heads and node.output[0] not in pinned:
                if all(n.op_type == "MatMul" and j == 1 for n, j in heads):
                    table.transposes.append(node)
                    table.lm_heads += [n for n, _ in heads]
                    continue
            break  # any other reader: leave the table alone
        else:
            if table.gathers and (table.tied or all(g.input[1] in graph_inputs for g in table.gathers)):
                tables[name] = table
    return tables


class _Rewrite:
    """Walks the fp32 graph once in order; subclasses say what each weight-reading node becomes."""

    def __init__(self, src: SourceGraph, usable_table: Callable[[tuple[int, ...]], bool]):
        self.src = src
        self.out = _empty_like(src.model)
        self.emit = qn.Emitted(initializers=self.out.graph.initializer)  # straight into the variant: no 2nd copy
        self.tables = find_tables(src, usable_table)
        self.transposed = {t.output[0]: table for table in self.tables.values() for t in table.transposes}
        self.summary = Summary()
        self.unchanged: set[str] = set()  # outputs of nodes copied as they are: their value_info still holds

    def run(self) -> tuple[onnx.ModelProto, Summary]:
        for node in self.src.graph.node:
            b = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
            if node.op_type == "Gather" and node.input[0] in self.tables:
                self.gather(node, self.tables[node.input[0]])
            elif node.op_type == "Transpose" and node.output[0] in self.transposed:
                self.transpose(node, self.transposed[node.output[0]])
            elif b in self.transposed:
                self.lm_head(node, self.transposed[b])
            elif b is not None and self.src.is_float_matrix(b):
                self.matmul(node, b)
            else:
                self.emit.nodes.append(node)
                self.unchanged.update(node.output)
        return self._finish(), self.summary

    def gather(self, node: NodeProto, table: Table) -> None:
        raise NotImplementedError

    def transpose(self, node: NodeProto, table: Table) -> None:
        raise NotImplementedError

    def lm_head(self, node: NodeProto, table: Table) -> None:
        raise NotImplementedError

    def matmul(self, node: NodeProto, weight: str) -> None:
        raise NotImplementedError

    def _finish(self) -> onnx.ModelProto:
        graph, out = self.src.graph, self.out.graph
        out.node.extend(self.emit.nodes)
        new = {t.name for t in out.initializer}
        used = _node_inputs(out.node) | {o.name for o in graph.output}
        for t in graph.initializer:  # float weights nothing reads any more are dropped; the rest is copied inline
            if t.name in used and t.name not in new:
                out.initializer.append(self.src.inline(t))
        kept = {t.name for t in out.initializer}
        initializer_names = set(self.src.initializers)
        out.input.extend(i for i in graph.input if i.name not in initializer_names or i.name in kept)
        # a rewritten node's outputs may change type (q8's Transpose now moves int8): onnxruntime infers those
        out.value_info.extend(v for v in graph.value_info if v.name in self.unchanged)
        if any(n.domain == qn.MS for n in out.node) and not any(o.domain == qn.MS for o in self.out.opset_import):
            self.out.opset_import.append(helper.make_opsetid(qn.MS, 1))
        return self.out


class _Q4(_Rewrite):
    def __init__(self, src: SourceGraph, block_size: int):
        # MatMulNBits wants a power-of-two block of at least 16; the embedding's rows, whole blocks
        ok_block = block_size >= 16 and block_size & (block_size - 1) == 0
        super().__init__(src, lambda shape: ok_block and shape[1] % block_size == 0)
        self.bs = block_size
        self.weights: dict[str, tuple[BlockCode, qn.BlockTensors]] = {}
        self.opset = _onnx_opset(src.model)

    def encode(self, w_nk: np.ndarray) -> BlockCode:
        code = encode_grid(w_nk, self.bs)
        if code is not None:
            code.accuracy_level = GRID_RECIPE["accuracy_level"]
            return code
        return rtn(w_nk, self.bs, 4, RTN_ACCURACY_LEVEL)

    def weight(self, name: str, transpose: bool) -> tuple[BlockCode, qn.BlockTensors]:
        """The code of initializer `name` (a MatMul's [K, N] B when `transpose`, else a [V, H] table), once."""
        if name not in self.weights:
            w = self.src.array(name)
            code = self.encode(w.T if transpose else w)
            del w  # unmaps it: the next weight is read only now
            self.weights[name] = (code, qn.add_block_code(self.emit, name, code))
        return self.weights[name]

    def matmul(self, node: NodeProto, weight: str) -> None:
        code, tensors = self.weight(weight, transpose=True)
        self.summary.weights[f"{code.kind} {code.bits}-bit"] += 1
        x, out = node.input[0], node.output[0]
        qn.matmul_nbits(self.emit, x, out, f"{node.name or out}_Q{code.bits}", code, tensors)

    def gather(self, node: NodeProto, table: Table) -> None:
        first = table.name not in self.weights
        code, tensors = self.weight(table.name, transpose=False)
        if first:
            what = "tied with lm_head, " if table.tied else ""
            self.summary.tables.append(
                f"embedding {list(code.scales.shape[:1]) + [code.k]} {what}{code.kind} {code.bits}-bit "
                f"{code.nbytes / 1e6:.1f} MB"
            )
        out = node.output[0]
        qn.gather_block_rows(self.emit, node.input[1], out, node.name or out, code, tensors, self.opset)

    def transpose(self, node: NodeProto, table: Table) -> None:
        pass  # lm_head reads the table's code through MatMulNBits: no transposed copy

    def lm_head(self, node: NodeProto, table: Table) -> None:
        code, tensors = self.weight(table.name, transpose=False)
        x, out = node.input[0], node.output[0]
        qn.matmul_nbits(self.emit, x, out, f"{node.name or out}_Q{code.bits}", code, tensors)


class _Q8(_Rewrite):
    def __init__(self, src: SourceGraph):
        super().__init__(src, lambda shape: True)
        self.quantized_inputs: dict[str, tuple[str, str, str]] = {}
        self.tables_done: set[str] = set()
        self.opset = _onnx_opset(src.model)

    def x_quantized(self, x: str) -> tuple[str, str, str]:
        if x not in self.quantized_inputs:
            self.quantized_inputs[x] = qn.dynamic_quantize(self.emit, x)
        return self.quantized_inputs[x]

    def matmul(self, node: NodeProto, weight: str) -> None:
        q, scale = int8_columns(self.src.array(weight))
        w_q = self.emit.init(f"{weight}_quantized", q)
        w_zp = self.emit.init(f"{weight}_zero_point", np.zeros(scale.shape, np.int8))
        w_scale = self.emit.init(f"{weight}_scale", scale)
        self.summary.weights["int8 per-column"] += 1
        out = node.output[0]
        qn.matmul_integer(self.emit, self.x_quantized(node.input[0]), w_q, w_zp, w_scale, out, node.name or out)

    def table(self, table: Table) -> None:
        """int8 per-row code (zero point 0): the embedding's rows and, transposed, lm_head's MatMulInteger B."""
        if table.name in self.tables_done:
            return
        self.tables_done.add(table.name)
        q, scales = int8_rows(self.src.array(table.name))
        self.emit.init(f"{table.name}_quantized", q)
        self.emit.init(f"{table.name}_scale", scales)  # [V]: a row's scale, and lm_head's per-column scale
        self.emit.init(f"{table.name}_zero_point", np.array(0, np.int8))
        what = "tied with lm_head (MatMulInteger on its Transpose), " if table.tied else ""
        self.summary.tables.append(f"embedding {list(q.shape)} {what}int8 per-row {q.nbytes / 1e6:.1f} MB")

    def gather(self, node: NodeProto, table: Table) -> None:
        # Plain ONNX ops, not GatherBlockQuantized: ORT-web's WASM build has no CPU kernel for it (session
        # creation fails), and q8 is the WASM variant. Rows first, then q * scale.
        self.table(table)
        t, ids, out = table.name, node.input[1], node.output[0]
        name = node.name or out
        make = helper.make_node
        self.emit.nodes += [
            make("Gather", [f"{t}_quantized", ids], [f"{out}_quantized"], name=f"{name}_rows"),
            make("Cast", [f"{out}_quantized"], [f"{out}_levels"], name=f"{name}_cast", to=onnx.TensorProto.FLOAT),
            make("Gather", [f"{t}_scale", ids], [f"{out}_row_scale"], name=f"{name}_scales"),
        ]
        qn.unsqueeze(self.emit, f"{out}_row_scale", [-1], f"{out}_row_scale_1", f"{name}_unsqueeze", self.opset)
        self.emit.nodes.append(make("Mul", [f"{out}_levels", f"{out}_row_scale_1"], [out], name=f"{name}_mul"))

    def transpose(self, node: NodeProto, table: Table) -> None:
        # A constant: onnxruntime folds it once at session start, so lm_head is a plain MatMulInteger and the
        # download carries the table once. ORT-web WASM, 1 thread, [1, 1024] x [1024, 32768]: 11-15 ms a token
        # like this, fp32 MatMul 6 ms, MatMulNBits 8-bit 67-97 ms, quantize_dynamic's DequantizeLinear → MatMul
        # 90-99 ms (onnxruntime does not fold DequantizeLinear, so the table is dequantized on every call).
        self.table(table)
        out = node.output[0]
        self.emit.nodes.append(
            helper.make_node("Transpose", [f"{table.name}_quantized"], [out], name=node.name or out, perm=[1, 0])
        )

    def lm_head(self, node: NodeProto, table: Table) -> None:
        self.table(table)
        out = node.output[0]
        x_q = self.x_quantized(node.input[0])
        b, zp, scale = node.input[1], f"{table.name}_zero_point", f"{table.name}_scale"
        qn.matmul_integer(self.emit, x_q, b, zp, scale, out, node.name or out)


def _empty_like(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` without its graph's nodes, initializers, I/O lists and value_info (filled by the rewrite)."""
    out = onnx.ModelProto()
    for name in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(out, name, getattr(model, name))
    out.opset_import.extend(model.opset_import)
    out.metadata_props.extend(model.metadata_props)
    out.functions.extend(model.functions)
    out.graph.name = model.graph.name
    out.graph.doc_string = model.graph.doc_string
    out.graph.output.extend(model.graph.output)
    return out


def _onnx_opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1)


def _attr(node: NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return list(value) if isinstance(value, list | tuple) else value
    return default


def _subgraph_names(graph: onnx.GraphProto) -> set[str]:
    """Every name read inside If/Loop/Scan bodies: outer-scope values they capture must stay as they are."""
    names: set[str] = set()
    for node in graph.node:
        for a in node.attribute:
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                names |= _node_inputs(g.node) | _subgraph_names(g)
    return names


def _node_inputs(nodes) -> set[str]:
    names = {i for n in nodes for i in n.input}
    for n in nodes:
        for a in n.attribute:
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                names |= _node_inputs(g.node)
    return names
