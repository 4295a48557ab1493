"""Naming the field that holds invalid UTF-8: only for that, and in time
linear in the body, whatever garbage arrives (it runs before any handler)."""

from __future__ import annotations

import pytest

from murmur.registration import _varint, bad_utf8_field
from murmur.v1 import murmur_pb2

POST = murmur_pb2.PostTweetRequest.DESCRIPTOR


def test_the_string_field_with_bad_utf8_is_named() -> None:
    body = b"\x08\x07" + b"\x12\x03ab\xff"  # user_id 7, text "ab\xff"
    assert bad_utf8_field(POST, body) == "text"


def test_a_field_cut_short_is_not_blamed_on_utf8() -> None:
    assert bad_utf8_field(POST, b"\x12\x05ab\xc3") is None


def test_a_varint_longer_than_ten_bytes_is_garbage() -> None:
    """Read on, continuation bytes would build an ever larger integer: a body
    of 1 MB of 0xff took minutes of the loop (quadratic), before any handler."""
    assert _varint(b"\xff" * 9 + b"\x01", 0) == ((1 << 63) | ((1 << 63) - 1), 10)
    with pytest.raises(IndexError):
        _varint(b"\xff" * 10 + b"\x01", 0)
    for body in (b"\xff" * 1_000_000, b"\x12" + b"\xff" * 1_000_000):
        assert bad_utf8_field(POST, body) is None
