"""An fp32 ONNX graph whose initializers are read one at a time, never all at once.

Qwen3-0.6B's fp32 graph is 2.4 GB in external data (`model.onnx_data`); onnx.load with external data holds all of
it, and a quantizer working on that proto holds it again (12 GB peak measured). Here the graph is loaded without
its external data; a weight is memory-mapped when the quantizer asks for it and unmapped once that array is gone.
Small single-file graphs (inline weights, SmolLM2-135M) work the same way: their weights already sit in the proto.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data


class SourceGraph:
    """The graph without external data. An inline graph's weights stay in the proto: loading one briefly holds its
    file twice (bytes, then the parsed proto), 1.1 GB peak RSS for SmolLM2-135M's 539 MB; inline means < 2 GB."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.model = onnx.load(self.path, load_external_data=False)
        self.graph = self.model.graph
        self.initializers = {t.name: t for t in self.graph.initializer}

    def is_float_matrix(self, name: str) -> bool:
        t = self.initializers.get(name)
        return t is not None and t.data_type == TensorProto.FLOAT and len(t.dims) == 2

    def array(self, name: str) -> np.ndarray:
        """The initializer's values: a read-only memory map for external data, so only what is touched is read."""
        t = self.initializers[name]
        if not uses_external_data(t):
            return numpy_helper.to_array(t)
        info = ExternalDataInfo(t)
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
        shape = tuple(t.dims)
        if dtype.kind not in "fiub" or not shape or 0 in shape:  # odd types/scalars: onnx's own reader
            return numpy_helper.to_array(t, base_dir=str(self.path.parent))
        return np.memmap(self.path.parent / info.location, dtype=dtype, mode="r", offset=info.offset or 0, shape=shape)

    def inline(self, t: TensorProto) -> TensorProto:
        """`t` with its bytes inside the proto (a copy when they live in external data; `t` itself otherwise)."""
        if not uses_external_data(t):
            return t
        info = ExternalDataInfo(t)
        with open(self.path.parent / info.location, "rb") as f:
            f.seek(info.offset or 0)
            data = f.read(info.length) if info.length else f.read()
        out = TensorProto()
        out.CopyFrom(t)
        del out.external_data[:]
        out.ClearField("data_location")  # absent, as in a tensor saved inline
        out.raw_data = data
        return out


def row_chunks(rows: int, cols: int, elements: int = 1 << 23) -> Iterator[slice]:
    """Row ranges of about `elements` values (32 MB of fp32): a 622 MB table is quantized in pieces like these."""
    step = max(1, elements // max(cols, 1))
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))
