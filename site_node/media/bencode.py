"""Bencode, the encoding of rtpengine's ng protocol: integers, byte strings, lists, dicts."""

from __future__ import annotations

# Nested deeper than this is refused: a reply that deep is garbage, not rtpengine.
MAX_DEPTH = 32

Value = int | bytes | str | list["Value"] | dict[str, "Value"]
Decoded = int | bytes | list["Decoded"] | dict[str, "Decoded"]


class BencodeError(ValueError):
    """Bytes that are not bencode."""


def encode(value: Value) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Value, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str):
        _encode(value.encode(), out)
    elif isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, list):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        # Keys in byte order, as the format requires.
        for key in sorted(value, key=lambda k: k.encode()):
            _encode(key, out)
            _encode(value[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Decoded:
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"trailing bytes at {end}")
    return value


def _decode(data: bytes, i: int, depth: int) -> tuple[Decoded, int]:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deep")
    if i >= len(data):
        raise BencodeError("truncated")
    c = data[i : i + 1]
    if c == b"i":
        end = data.find(b"e", i)
        if end < 0:
            raise BencodeError("unterminated integer")
        try:
            return int(data[i + 1 : end]), end + 1
        except ValueError:
            raise BencodeError(f"bad integer at {i}") from None
    if c == b"l":
        items: list[Decoded] = []
        i += 1
        while data[i : i + 1] != b"e":
            item, i = _decode(data, i, depth + 1)
            items.append(item)
        return items, i + 1
    if c == b"d":
        result: dict[str, Decoded] = {}
        i += 1
        while data[i : i + 1] != b"e":
            key, i = _decode(data, i, depth + 1)
            if not isinstance(key, bytes):
                raise BencodeError("dict key is not a string")
            result[key.decode(errors="replace")], i = _decode(data, i, depth + 1)
        return result, i + 1
    if c.isdigit():
        colon = data.find(b":", i)
        if colon < 0 or not data[i:colon].isdigit():
            raise BencodeError(f"bad string length at {i}")
        start = colon + 1
        end = start + int(data[i:colon])
        if end > len(data):
            raise BencodeError("truncated string")
        return data[start:end], end
    raise BencodeError(f"unexpected byte {c!r} at {i}")
