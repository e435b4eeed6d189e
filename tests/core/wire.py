"""A minimal, independent protobuf wire-format reader for the tests (no generated code).

Used to check the envelope encodings and the test vectors without trusting the library's own
protobuf classes: varints, 64-bit, length-delimited and 32-bit fields; groups are refused.
"""

from __future__ import annotations


class WireError(ValueError):
    pass


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint too long")


def fields(data: bytes) -> list[tuple[int, int, int | bytes, int, int]]:
    """(field number, wire type, value, start offset, end offset) for each top-level field."""
    out: list[tuple[int, int, int | bytes, int, int]] = []
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, pos = read_varint(data, pos)
        elif wire_type == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire_type == 2:
            length, pos = read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire_type == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        if pos > len(data):
            raise WireError("truncated field")
        out.append((number, wire_type, value, start, pos))
    return out


def as_dict(data: bytes) -> dict[int, int | bytes]:
    """field number -> value (last one wins, as protobuf parses singular fields)."""
    return {number: value for number, _, value, _, _ in fields(data)}


def spans(data: bytes) -> dict[int, tuple[int, int, int]]:
    """field number -> (start of key, start of value, end) of its last occurrence."""
    out: dict[int, tuple[int, int, int]] = {}
    for number, wire_type, _value, start, end in fields(data):
        _, value_start = read_varint(data, start)
        if wire_type == 2:
            _, value_start = read_varint(data, value_start)
        out[number] = (start, value_start, end)
    return out


def varint(value: int) -> bytes:
    """The varint encoding of ``value`` taken as a uint64 (negative numbers: two's complement)."""
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def encode(fields: list[tuple[int, int | bytes]]) -> bytes:
    """Encode (field number, value) pairs in order: ints as varints, bytes length-delimited.
    Like every protobuf serializer, callers leave out proto3 fields that hold their default."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, int):
            out += varint(number << 3) + varint(value)
        else:
            out += varint(number << 3 | 2) + varint(len(value)) + value
    return bytes(out)
