"""Protobuf wire encoding by concatenation.

A serialized message is the concatenation of its serialized fields, in any
order, so a response for many streams is built from pre-serialized parts:
the body once per version, plus a few bytes of nonce per stream.
"""
from __future__ import annotations


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def header(number: int, length: int) -> bytes:
    """The tag and length of a length-delimited field whose payload is ``length`` bytes."""
    return varint(number << 3 | 2) + varint(length)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes or embedded message)."""
    return header(number, len(payload)) + payload


def nested(number: int, parts: list[bytes]) -> list[bytes]:
    """A length-delimited field as parts, its payload not copied: join the outermost once.

    A large message (a listener of 5,000 chains or matcher entries) is then copied once,
    not once per level of nesting."""
    return [header(number, sum(map(len, parts))), *parts]


def field_str(number: int, text: str) -> bytes:
    return field_bytes(number, text.encode())


def any_message(type_url: str, value: bytes) -> list[bytes]:
    """google.protobuf.Any {type_url = 1, value = 2}, as parts (``nested``)."""
    return [field_str(1, type_url), header(2, len(value)), value]
