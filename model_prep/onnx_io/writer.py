"""The one ONNX writer: a model written one initializer at a time, weights in external data when a graph is big.

onnx.save serializes the whole ModelProto at once, and protobuf's encoder grows its buffer by doubling before the
bytes are copied out: a 600 MB q8 variant of Qwen3-0.6B took peak RSS from 0.74 to 3.38 GB there. A protobuf
message is the concatenation of its fields' encodings, in any order, so the file is written as: the model without
its graph, then the graph field (tag, length) holding the graph without its initializers followed by each
initializer as its own field. Parsers (onnx, onnxruntime, ORT-web) read it as the same message.

Initializers come from the in-memory model (the quantizer builds each variant in memory) and from `Streamed`
tensors, read only when their turn comes (the exporter's weights, one checkpoint tensor at a time): every length is
known before the first weight is read, because a streamed tensor's encoding is its header plus its shape's bytes.
When the initializers together pass INLINE_LIMIT, every tensor of EXTERNAL_MIN_BYTES or more goes to
`<name>.onnx_data` at a page-aligned offset, so onnxruntime can map it in place; smaller graphs are one file, which
is what Transformers.js loads by default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import Message
from onnx import TensorProto, helper

INLINE_LIMIT = 1_800_000_000  # bytes of initializers; protobuf cannot hold 2 GB in one message
ALIGN = 1 << 16  # external data offsets: onnxruntime maps a tensor in place when its offset is page-aligned
EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay inline in a graph with external data (onnx's own default)
MODEL_GRAPH = 7  # ModelProto.graph
GRAPH_INITIALIZER = 5  # GraphProto.initializer
TENSOR_RAW_DATA = 9  # TensorProto.raw_data
MAX_FILE = 2**31 - 1  # protobuf's 2 GB limit on one message: beyond it, a graph needs external data


@dataclass(frozen=True)
class Streamed:
    """An initializer the writer reads when it gets to it: `read()` returns a C-contiguous array of `shape`."""

    name: str
    shape: tuple[int, ...]
    read: Callable[[], np.ndarray]
    dtype: np.dtype = np.dtype(np.float32)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass
class _Entry:
    """One initializer as it will be written: `header` is the whole tensor, or all of it but its bytes."""

    header: TensorProto
    size: int  # of the tensor's encoding in the .onnx file
    payload: Callable[[], bytes | memoryview] | None = None  # the bytes: inline after the header, or external
    offset: int | None = None  # in the external data file


def save(model: onnx.ModelProto, path: Path, streamed: Sequence[Streamed] = ()) -> int:
    """Write `model` (its initializers first, then `streamed`'s) to `path`; returns the .onnx file's size.

    Same message as onnx.save would write (field order aside). A failure removes what was written."""
    path = Path(path)
    data_path = path.with_suffix(".onnx_data")
    payload_bytes = sum(_raw_size(t) for t in model.graph.initializer) + sum(s.nbytes for s in streamed)
    external = data_path.name if payload_bytes > INLINE_LIMIT else None
    entries = _plan(model.graph.initializer, streamed, external)
    head = _without(model, "graph").SerializeToString()
    graph_head = _without(model.graph, "initializer").SerializeToString()
    graph_size = len(graph_head) + sum(_field_size(GRAPH_INITIALIZER, e.size) for e in entries)
    total = len(head) + _field_size(MODEL_GRAPH, graph_size)
    if total > MAX_FILE:
        raise ValueError(f"{path.name} would be {total / 1e9:.2f} GB: over protobuf's 2 GB limit for one file")
    try:
        with open(path, "wb") as f, open(data_path, "wb") if external else _NoFile() as data:
            f.write(head)
            f.write(_key(MODEL_GRAPH) + _varint(graph_size))
            f.write(graph_head)
            for entry in entries:
                f.write(_key(GRAPH_INITIALIZER) + _varint(entry.size))
                _write_entry(entry, f, data)
    except BaseException:
        path.unlink(missing_ok=True)
        if external:
            data_path.unlink(missing_ok=True)
        raise
    return total


def _plan(initializers: Sequence[TensorProto], streamed: Sequence[Streamed], external: str | None) -> list[_Entry]:
    entries: list[_Entry] = []
    end = 0  # of the external data written so far

    def place(nbytes: int) -> int:
        nonlocal end
        offset = -(-end // ALIGN) * ALIGN
        end = offset + nbytes
        return offset

    for t in initializers:
        raw = len(t.raw_data) if t.HasField("raw_data") else 0
        if external and raw >= EXTERNAL_MIN_BYTES:
            offset = place(raw)
            header = _external_header(_without(t, "raw_data"), external, offset, raw)
            entries.append(_Entry(header, header.ByteSize(), (lambda t=t: t.raw_data), offset))
        else:
            entries.append(_Entry(t, t.ByteSize()))
    for s in streamed:
        header = TensorProto(name=s.name, data_type=helper.np_dtype_to_tensor_dtype(s.dtype), dims=s.shape)
        read = _checked(s)
        if external and s.nbytes >= EXTERNAL_MIN_BYTES:
            offset = place(s.nbytes)
            header = _external_header(header, external, offset, s.nbytes)
            entries.append(_Entry(header, header.ByteSize(), read, offset))
        else:
            entries.append(_Entry(header, header.ByteSize() + _field_size(TENSOR_RAW_DATA, s.nbytes), read))
    return entries


def _write_entry(entry: _Entry, f, data) -> None:
    header = entry.header.SerializeToString()
    if entry.payload is None:
        parts = [header]
    else:
        payload = memoryview(entry.payload()).cast("B")
        if entry.offset is None:  # inline: the raw_data field after the header (field order: raw_data comes last)
            parts = [header, _key(TENSOR_RAW_DATA) + _varint(len(payload)), payload]
        else:
            data.seek(entry.offset)
            data.write(payload)
            parts = [header]
        del payload
    written = sum(len(p) for p in parts)
    if written != entry.size:  # the length already written would be wrong: the file must not be left half-valid
        raise RuntimeError(f"{entry.header.name}: encoded {written} bytes, planned {entry.size}")
    for part in parts:
        f.write(part)


def _checked(s: Streamed) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        array = s.read()
        if array.shape != s.shape or array.dtype != s.dtype or not array.flags.c_contiguous:
            raise ValueError(f"{s.name}: read a {array.dtype} {array.shape} array, expected {s.dtype} {s.shape}")
        return array

    return read


def _external_header(t: TensorProto, location: str, offset: int, length: int) -> TensorProto:
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def _raw_size(t: TensorProto) -> int:
    return len(t.raw_data) if t.HasField("raw_data") else t.ByteSize()


def _without(message: Message, skip: str) -> Message:
    """A copy of `message` minus field `skip`, field by field (a CopyFrom would copy the big field too)."""
    out = type(message)()
    for descriptor, value in message.ListFields():
        if descriptor.name == skip:
            continue
        if descriptor.is_repeated:  # ONNX has no map fields
            getattr(out, descriptor.name).extend(value)
        elif descriptor.type == descriptor.TYPE_MESSAGE:
            getattr(out, descriptor.name).CopyFrom(value)
        else:
            setattr(out, descriptor.name, value)
    return out


class _NoFile:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


def _key(field: int) -> bytes:
    return _varint(field << 3 | 2)  # wire type 2: length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_size(field: int, size: int) -> int:
    return len(_key(field)) + len(_varint(size)) + size
