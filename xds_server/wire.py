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


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes or embedded message)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_str(number: int, text: str) -> bytes:
    return field_bytes(number, text.encode())


def any_message(type_url: str, value: bytes) -> bytes:
    """google.protobuf.Any {type_url = 1, value = 2}."""
    return field_str(1, type_url) + field_bytes(2, value)
