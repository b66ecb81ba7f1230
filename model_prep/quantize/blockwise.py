"""Block-quantized weights in MatMulNBits' layout, shared by MatMulNBits and the embedding rows
(model_prep/quantize/nodes.gather_block_rows).

A weight is seen as N rows of K inputs ([N, K]: a MatMul's B transposed, or an embedding table [vocab, hidden] as
is). Row n, block b holds `block_size` consecutive inputs: w[n, b*bs + i] = scales[n, b] * (q[n, b, i] - zp[n, b]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..onnx_io.reader import row_chunks


@dataclass
class BlockCode:
    bits: int  # 4 or 8
    block_size: int
    k: int  # inputs per row before padding to whole blocks
    packed: np.ndarray  # [N, nb, bs*bits/8] uint8: 4 bits = element 2j in the low nibble of byte j
    scales: np.ndarray  # [N, nb] float32
    zero_points: np.ndarray | None  # uint8, [N, ceil(nb*bits/8)] (4-bit packed like `packed`); None: 2**(bits-1)
    kind: str  # "rtn" (stock symmetric 4-bit), "q4_1" or "q8_0" (a GGUF grid re-encoded, model_prep/quantize/grid)
    exact_blocks: int = 0  # grid codes: blocks reproduced exactly
    accuracy_level: int = 0  # MatMulNBits' compute setting that suits the code (see variants.RTN_ACCURACY_LEVEL)

    @property
    def n(self) -> int:
        return self.packed.shape[0]

    @property
    def blocks(self) -> int:
        return self.scales.size

    @property
    def nbytes(self) -> int:
        return self.packed.nbytes + self.scales.nbytes + (0 if self.zero_points is None else self.zero_points.nbytes)


def rtn(w_nk: np.ndarray, block_size: int, bits: int = 4, accuracy_level: int = 0) -> BlockCode:
    """Stock symmetric round-to-nearest, computed by onnxruntime's own MatMulNBits kernel.

    The kernel quantizes the columns of a [K, N] matrix; `w_nk` goes through it in row chunks (each transposed on
    its own), so an embedding table never needs a second full-size copy. Columns are independent: chunked and
    whole give the same bytes. Symmetric: no zero points stored (the default 2**(bits-1) applies).
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )

    quantizer = DefaultWeightOnlyQuantizer(
        DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, bits=bits)
    )
    n, k = w_nk.shape
    packed, scales = [], []
    for rows in row_chunks(n, k):
        p, s, _ = quantizer.qbits_block_quant(np.ascontiguousarray(w_nk[rows].T, dtype=np.float32))
        packed.append(p)
        scales.append(s)
    return BlockCode(
        bits,
        block_size,
        k,
        np.concatenate(packed),
        np.concatenate(scales).astype(np.float32),
        None,
        "rtn",
        accuracy_level=accuracy_level,
    )
