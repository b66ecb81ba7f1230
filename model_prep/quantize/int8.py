"""Symmetric 8-bit weights for the q8 variant, computed the way onnxruntime's quantize_dynamic computes them.

quantize_dynamic(per_channel=True, weight_type=QInt8) gives a MatMul weight one scale per output column:
scale = absmax / 127 (onnxruntime.quantization.quant_utils.compute_scale_zp, symmetric int8 range [-127, 127]) and
q = round(w / scale) (quant_utils.quantize_nparray). It does that column by column in Python over a fully loaded
model; here it is vectorised over one tensor at a time, with the same helpers for range and rounding.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..onnx_io.reader import row_chunks


def _symmetric_scales(absmax: np.ndarray) -> np.ndarray:
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.INT8, symmetric=True)
    # compute_scale_zp: float64 range over float64 steps, stored as float32; an all-zero channel gets scale 1
    scale = (2 * absmax.astype(np.float64) / (float(qmax) - float(qmin))).astype(np.float32)
    return np.where(scale < np.finfo(np.float32).tiny, np.float32(1), scale)


def int8_columns(w_kn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A MatMul weight [K, N] → (int8 [K, N], float32 scales [N]); the zero point is 0."""
    from onnxruntime.quantization.quant_utils import quantize_nparray

    w = np.asarray(w_kn, dtype=np.float32)
    scale = _symmetric_scales(np.abs(w).max(axis=0))
    return quantize_nparray(TensorProto.INT8, w, scale, 0), scale


def int8_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An embedding table [V, H] → (int8 [V, H], float32 scales [V]): `int8_columns` of its transpose, in row chunks.

    Per row because the same bytes serve the embedding (a row is a token) and, for a tied lm_head, MatMulInteger on
    the transposed table (a row is an output column): the q8 variant stores the table once.
    """
    from onnxruntime.quantization.quant_utils import quantize_nparray

    v, h = table.shape
    q = np.empty((v, h), np.int8)
    scales = np.empty(v, np.float32)
    for rows in row_chunks(v, h):
        chunk = np.asarray(table[rows], dtype=np.float32)
        scales[rows] = _symmetric_scales(np.abs(chunk).max(axis=1))
        q[rows] = quantize_nparray(TensorProto.INT8, chunk, scales[rows, None], 0)
    return q, scales
