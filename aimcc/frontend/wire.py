"""Protobuf wire format, just enough to lift the initializers' payloads out of an ONNX file.

protobuf's parser copies every bytes field twice on its way to numpy (into its arena, then into
a Python ``bytes``); for a 90 MB model those copies were most of the compile time. Instead the
loader maps the file, :func:`split_payloads` finds ``ModelProto.graph.initializer[*].raw_data``
in place, and protobuf parses only the rest (the skeleton, ~0.1 % of the bytes).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

# ModelProto.graph -> GraphProto.initializer -> TensorProto.raw_data (field numbers, onnx.proto)
PAYLOAD_PATH = (7, 5, 9)
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

Span = tuple[int, int]
Buffer = bytes | mmap.mmap


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def split_payloads(buf: Buffer) -> tuple[bytes, list[Span | None]]:
    """The message without the fields at :data:`PAYLOAD_PATH`, and each initializer's
    ``raw_data`` span in ``buf`` (None: it has none), in the order protobuf parses them."""
    spans: list[Span | None] = []
    return _strip(buf, 0, len(buf), 0, spans), spans


def _strip(buf: Buffer, start: int, end: int, depth: int, spans: list) -> bytes:
    """The message in ``buf[start:end]`` re-encoded without the fields at PAYLOAD_PATH[depth:]."""
    kept: list[bytes] = []
    payload = None
    last = depth == len(PAYLOAD_PATH) - 1
    for number, wire, key, value, stop in _fields(buf, start, end):
        if number != PAYLOAD_PATH[depth] or wire != _LENGTH:
            kept.append(buf[key:stop])
        elif last:
            payload = (value, stop)  # a repeated scalar field: the last one wins, as in protobuf
        else:
            inner = _strip(buf, value, stop, depth + 1, spans)
            kept.append(_varint_bytes(number << 3 | _LENGTH) + _varint_bytes(len(inner)) + inner)
    if last:
        spans.append(payload)
    return b"".join(kept)


def _fields(buf: Buffer, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, offset of its key, of its value, end of its value)."""
    pos = start
    while pos < end:
        key = pos
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {key}")
        if wire == _VARINT:
            value = pos
            _, pos = _varint(buf, pos, end)
        elif wire == _LENGTH:
            length, value = _varint(buf, pos, end)
            pos = value + length
        elif wire in (_FIXED64, _FIXED32):
            value = pos
            pos += 8 if wire == _FIXED64 else 4
        else:  # groups (3, 4) are not used by onnx.proto; 6 and 7 do not exist
            raise WireError(f"wire type {wire} at byte {key}")
        if pos > end:
            raise WireError(f"field {number} at byte {key} runs past its message")
        yield number, wire, key, value, pos


def _varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 64:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise WireError(f"truncated or overlong varint before byte {pos}")


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
