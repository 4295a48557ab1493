"""Page tokens (opaque, tamper-evident cursors) and the input rules."""

from __future__ import annotations

import base64
import struct
import unicodedata
import zlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from murmur import page_tokens, validation
from murmur.page_tokens import BadPageToken, TokenKind
from murmur.validation import InvalidInput

# no per-example deadline: the suite must not flake on a loaded machine
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

cursors = st.integers(min_value=0, max_value=(1 << 64) - 1)
owners = st.integers(min_value=1, max_value=(1 << 64) - 1)
kinds = st.sampled_from(list(TokenKind))
HANDLE_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"


def raw_bytes(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def to_token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# page tokens ---------------------------------------------------------------


def sealed(body: bytes) -> str:
    """A token of ``body`` with a checksum that matches, as a forger would make."""
    return to_token(body + struct.pack(">I", zlib.crc32(body)))


@given(kinds, owners, cursors)
@PROPERTY
def test_token_round_trips(kind: TokenKind, owner: int, cursor: int) -> None:
    token = page_tokens.encode(kind, owner, cursor)
    assert token and token.isascii()
    assert "=" not in token and "+" not in token and "/" not in token  # URL-safe
    assert page_tokens.decode(kind, owner, token) == cursor


@given(kinds, owners, cursors, cursors)
@PROPERTY
def test_distinct_cursors_give_distinct_tokens(kind: TokenKind, owner: int, a: int, b: int):
    same = page_tokens.encode(kind, owner, a) == page_tokens.encode(kind, owner, b)
    assert same == (a == b)


@given(kinds, kinds, cursors)
@PROPERTY
def test_token_of_another_listing_is_rejected(made: TokenKind, used: TokenKind, cursor: int):
    token = page_tokens.encode(made, 7, cursor)
    if made == used:
        assert page_tokens.decode(used, 7, token) == cursor
    else:
        with pytest.raises(BadPageToken, match="different listing"):
            page_tokens.decode(used, 7, token)


@given(kinds, owners, owners, cursors)
@PROPERTY
def test_token_of_another_user_is_rejected(kind: TokenKind, made: int, used: int, cursor: int):
    token = page_tokens.encode(kind, made, cursor)
    if made == used:
        assert page_tokens.decode(kind, used, token) == cursor
    else:
        with pytest.raises(BadPageToken, match=f"^page_token was issued for user {made}, not"):
            page_tokens.decode(kind, used, token)


@given(kinds, owners, cursors)
@PROPERTY
def test_version_1_token_without_owner_still_pages(kind: TokenKind, owner: int, cursor: int):
    """Tokens handed out before tokens named their owner keep working, so a
    client paging through a rolling upgrade keeps its place."""
    legacy = sealed(struct.pack(">BBQ", 1, int(kind), cursor))
    assert page_tokens.decode(kind, owner, legacy) == cursor
    for other in TokenKind:
        if other != kind:
            with pytest.raises(BadPageToken, match="different listing"):
                page_tokens.decode(other, owner, legacy)


@pytest.mark.parametrize("kind", list(TokenKind))
def test_empty_token_is_first_page(kind: TokenKind) -> None:
    assert page_tokens.decode(kind, 7, "") == 0


@given(kinds, owners, cursors, st.data())
@PROPERTY
def test_truncated_token_is_rejected(kind, owner: int, cursor: int, data: st.DataObject) -> None:
    token = page_tokens.encode(kind, owner, cursor)
    cut = data.draw(st.integers(min_value=1, max_value=len(token) - 1))
    with pytest.raises(BadPageToken):
        page_tokens.decode(kind, owner, token[:cut])


@given(kinds, owners, cursors, st.data())
@PROPERTY
def test_extended_token_is_rejected(kind, owner: int, cursor: int, data: st.DataObject) -> None:
    token = page_tokens.encode(kind, owner, cursor)
    extra = data.draw(st.text(alphabet=HANDLE_ALPHABET + "-", min_size=1, max_size=8))
    with pytest.raises(BadPageToken):
        page_tokens.decode(kind, owner, token + extra)


@given(kinds, owners, cursors, st.data())
@PROPERTY
def test_any_bit_flip_is_rejected(kind, owner: int, cursor: int, data: st.DataObject) -> None:
    raw = bytearray(raw_bytes(page_tokens.encode(kind, owner, cursor)))
    bit = data.draw(st.integers(min_value=0, max_value=len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(BadPageToken):
        page_tokens.decode(kind, owner, to_token(bytes(raw)))


@given(kinds, cursors, cursors)
@PROPERTY
def test_forged_cursor_without_checksum_is_rejected(kind: TokenKind, cursor: int, other: int):
    raw = bytearray(raw_bytes(page_tokens.encode(kind, 7, cursor)))
    raw[10:18] = other.to_bytes(8, "big")  # change the cursor, keep the old crc
    if other == cursor:
        assert page_tokens.decode(kind, 7, to_token(bytes(raw))) == cursor
    else:
        with pytest.raises(BadPageToken, match="checksum"):
            page_tokens.decode(kind, 7, to_token(bytes(raw)))


@given(kinds, owners, cursors, st.data())
@PROPERTY
def test_non_base64url_character_is_rejected(
    kind: TokenKind, owner: int, cursor: int, data: st.DataObject
) -> None:
    """In place of a character or added anywhere: b64decode drops such
    characters, so a real token with junk inside used to page on."""
    token = page_tokens.encode(kind, owner, cursor)
    at = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    junk = data.draw(st.sampled_from(["!", ".", "*", "~", " ", "$", "%", "=", "==", "+", "/"]))
    junk = data.draw(st.sampled_from([junk, "é", "\x00", "\n"]))
    replaced = data.draw(st.booleans())
    with pytest.raises(BadPageToken, match="^page_token is not valid base64url$"):
        page_tokens.decode(kind, owner, token[:at] + junk + token[at + replaced :])


@pytest.mark.parametrize("version", [0, 3, 255])
def test_unsupported_version_is_rejected(version: int) -> None:
    token = sealed(struct.pack(">BBQQ", version, int(TokenKind.HOME_TIMELINE), 7, 5))
    with pytest.raises(BadPageToken, match=f"version {version} is not supported"):
        page_tokens.decode(TokenKind.HOME_TIMELINE, 7, token)


@pytest.mark.parametrize(
    ("version", "fmt"),
    [(1, ">BBQQ"), (2, ">BBQ"), (2, ">BBQQQ")],
    ids=["v1-long", "v2-short", "v2-long"],
)
def test_sealed_body_of_the_wrong_length_is_rejected(version: int, fmt: str) -> None:
    """A body whose checksum matches but whose length is not its version's."""
    fields = [version, int(TokenKind.FOLLOWERS)] + [7] * (len(fmt) - 3)
    with pytest.raises(BadPageToken, match="wrong length"):
        page_tokens.decode(TokenKind.FOLLOWERS, 7, sealed(struct.pack(fmt, *fields)))


@pytest.mark.parametrize(
    "token",
    ["!!!!", "a", "abcde", "not a token", "é" * 19, "====", "\x00" * 19, "A" * 19, "A" * 200],
)
def test_garbage_tokens_are_rejected(token: str) -> None:
    for kind in TokenKind:
        with pytest.raises(BadPageToken):
            page_tokens.decode(kind, 7, token)


def test_bad_page_token_is_a_value_error() -> None:
    assert issubclass(BadPageToken, ValueError)


# handles -------------------------------------------------------------------


@given(st.text(alphabet=HANDLE_ALPHABET, min_size=1, max_size=15))
@PROPERTY
def test_valid_handles_accepted(handle: str) -> None:
    assert validation.check_handle(handle) == handle


@pytest.mark.parametrize(
    "handle",
    [
        "",
        "a" * 16,
        "has space",
        " lead",
        "trail ",
        "tab\there",
        "new\nline",
        "nul\x00",
        "bell\x07",
        "café",  # unicode letter
        "Ωmega",
        "ａｂｃ",  # fullwidth letters
        "١٢٣",  # Arabic-Indic digits (str.isdigit() but not [0-9])
        "zero\u200bwidth",
        "\u200b",
        "dash-ed",
        "dot.ted",
        "at@",
        "emoji😀",
        "trailing\n",
    ],
)
def test_invalid_handles_rejected_naming_field(handle: str) -> None:
    with pytest.raises(InvalidInput, match="handle"):
        validation.check_handle(handle)


@given(st.text(min_size=1, max_size=20))
@PROPERTY
def test_handle_rule_is_exactly_the_documented_alphabet(handle: str) -> None:
    valid = 1 <= len(handle) <= 15 and all(c in HANDLE_ALPHABET for c in handle)
    if valid:
        assert validation.check_handle(handle) == handle
    else:
        with pytest.raises(InvalidInput, match="handle"):
            validation.check_handle(handle)


def test_handle_boundaries() -> None:
    assert validation.check_handle("a") == "a"
    assert validation.check_handle("A" * 15) == "A" * 15
    with pytest.raises(InvalidInput, match="16"):
        validation.check_handle("A" * 16)


# display name and bio ------------------------------------------------------


@pytest.mark.parametrize(("field", "limit"), [("display_name", 50), ("bio", 160)])
def test_short_text_limits_in_code_points(field: str, limit: int) -> None:
    assert validation.check_short_text(field, "", limit) == ""
    assert validation.check_short_text(field, "x" * limit, limit) == "x" * limit
    emoji = "😀" * limit  # astral: 1 code point, 2 UTF-16 units, 4 bytes
    assert validation.check_short_text(field, emoji, limit) == emoji
    with pytest.raises(InvalidInput, match=field):
        validation.check_short_text(field, "x" * (limit + 1), limit)


@pytest.mark.parametrize(("field", "limit"), [("display_name", 50), ("bio", 160)])
def test_short_text_counts_after_nfc(field: str, limit: int) -> None:
    decomposed = "e\u0301" * limit  # 2*limit code points, limit after NFC
    assert len(decomposed) == 2 * limit
    assert validation.check_short_text(field, decomposed, limit) == "é" * limit
    with pytest.raises(InvalidInput, match=field):
        validation.check_short_text(field, decomposed + "e\u0301", limit)


@pytest.mark.parametrize("field", ["display_name", "bio"])
def test_short_text_controls(field: str) -> None:
    for bad in ("\x00", "a\x1bb", "\x7f", "\u0085"):
        with pytest.raises(InvalidInput, match=field):
            validation.check_short_text(field, bad, 160)
    assert validation.check_short_text(field, "line\nline\ttab", 160) == "line\nline\ttab"


# tweet text ----------------------------------------------------------------


def test_tweet_280_code_points_after_nfc_accepted() -> None:
    text = "e\u0301" * 280  # 560 code points before NFC
    result = validation.check_tweet_text(text)
    assert result == "é" * 280
    assert len(result) == 280
    assert unicodedata.is_normalized("NFC", result)


def test_tweet_281_rejected_naming_field() -> None:
    with pytest.raises(InvalidInput, match=r"^text .*281"):
        validation.check_tweet_text("e\u0301" * 281)
    with pytest.raises(InvalidInput, match="text"):
        validation.check_tweet_text("x" * 281)


def test_tweet_length_boundaries() -> None:
    assert validation.check_tweet_text("x") == "x"
    assert validation.check_tweet_text("x" * 280) == "x" * 280
    assert validation.check_tweet_text("😀" * 280) == "😀" * 280


@pytest.mark.parametrize("text", ["e\u0301", "\u3164a", "\u200b\U0001f600"])
def test_a_visible_character_among_invisible_ones_is_enough(text: str) -> None:
    assert validation.check_tweet_text(text) == unicodedata.normalize("NFC", text)


@pytest.mark.parametrize("text", ["", " ", "   \n\t ", "\u3000", "\u00a0\u2003", "\r\n"])
def test_tweet_whitespace_only_rejected(text: str) -> None:
    with pytest.raises(InvalidInput, match="text"):
        validation.check_tweet_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "\u200b",
        "\ufeff\u2060",
        "\u0301\u0302",
        "\u2800 \u3164",
        "\u115f\u1160\uffa0",
        "\U0001bc9d",  # a Duployan selector (Mn) alone
        "\u20dd",  # an enclosing circle (Me) around nothing
    ],
)
def test_tweet_that_shows_nothing_rejected(text: str) -> None:
    with pytest.raises(InvalidInput, match="^text must contain at least one visible character"):
        validation.check_tweet_text(text)
    assert validation.check_tweet_text(text + "a") == unicodedata.normalize("NFC", text + "a")


def test_text_too_long_to_fit_after_nfc_is_refused_before_normalising(monkeypatch) -> None:
    """No canonical decomposition is longer than 4 code points, so NFC
    leaves at least a quarter: 4 x 280 may still fit, one more cannot."""
    alpha = "\u03b1\u0314\u0342\u0345"  # U+1F87, decomposed
    assert validation.check_tweet_text(alpha * 280) == "\u1f87" * 280
    normalized: list[int] = []
    real = unicodedata.normalize
    monkeypatch.setattr(
        validation.unicodedata, "normalize", lambda f, v: normalized.append(len(v)) or real(f, v)
    )
    with pytest.raises(InvalidInput, match="^text is 1121 characters before NFC normalisation; "):
        validation.check_tweet_text(alpha * 280 + "x")
    with pytest.raises(InvalidInput, match="^bio is 641 characters before NFC .* limit is 160 "):
        validation.check_short_text("bio", "x" * 641, validation.MAX_BIO)
    assert normalized == []


@pytest.mark.parametrize("text", ["a\x00b", "\x00", "ring\x07", "esc\x1b[31m", "del\x7f", "a\rb"])
def test_tweet_control_characters_rejected(text: str) -> None:
    with pytest.raises(InvalidInput, match="text.*control"):
        validation.check_tweet_text(text)


def test_tweet_keeps_newline_and_tab() -> None:
    assert validation.check_tweet_text("a\nb\tc") == "a\nb\tc"


# what draws nothing: controls, format characters (Cf), combining marks with
# no base (Mn, Me), separators (Z*), and the blank fillers Hangul and Braille
# have as letters or symbols
DRAWS_NOTHING = {"Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp"}
BLANK_FILLERS = {"\u115f", "\u1160", "\u2800", "\u3164", "\uffa0"}


@given(st.text(min_size=1, max_size=300))
@example("\U0001bc9d")  # a lone Duployan selector (Mn): once taken for visible
@example("\u200b\u2800 ")
@PROPERTY
def test_tweet_rule_property(text: str) -> None:
    normalized = unicodedata.normalize("NFC", text)
    controls = any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in normalized)
    visible = any(
        not c.isspace() and unicodedata.category(c) not in DRAWS_NOTHING and c not in BLANK_FILLERS
        for c in normalized
    )
    ok = visible and len(normalized) <= 280 and not controls
    if ok:
        assert validation.check_tweet_text(text) == normalized
    else:
        with pytest.raises(InvalidInput, match="text"):
            validation.check_tweet_text(text)


# ids, request ids, page sizes ----------------------------------------------


def test_request_id_limit() -> None:
    assert validation.check_request_id("") == ""
    assert validation.check_request_id("r" * 64) == "r" * 64
    with pytest.raises(InvalidInput, match="request_id"):
        validation.check_request_id("r" * 65)


@pytest.mark.parametrize("value", [0, -1])
def test_check_id_requires_positive(value: int) -> None:
    with pytest.raises(InvalidInput, match="tweet_id"):
        validation.check_id("tweet_id", value)


def test_check_id_accepts_positive() -> None:
    assert validation.check_id("user_id", 7) == 7


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(0, 20), (1, 1), (20, 20), (199, 199), (200, 200), (201, 200), (500, 200), (2**31 - 1, 200)],
)
def test_page_size(requested: int, expected: int) -> None:
    assert validation.page_size(requested) == expected


@pytest.mark.parametrize("requested", [-1, -20, -(2**31)])
def test_negative_page_size_rejected(requested: int) -> None:
    rule = r"it must be 0 or more \(0 means 20, above 200 means 200\)"
    with pytest.raises(InvalidInput, match=rf"page_size is {requested}; {rule}"):
        validation.page_size(requested)


def test_invalid_input_is_a_value_error() -> None:
    assert issubclass(InvalidInput, ValueError)


def test_control_rule_is_exactly_category_cc_but_tab_and_newline() -> None:
    """Every code point: the regex rejects what the Unicode category says."""
    for code in range(0x110000):
        char = chr(code)
        forbidden = unicodedata.category(char) == "Cc" and char not in "\n\t"
        try:
            validation.check_short_text("bio", char, 10)
        except InvalidInput as exc:
            assert forbidden and f"U+{code:04X}" in str(exc), hex(code)
        else:
            assert not forbidden, hex(code)


@pytest.mark.parametrize("handle", ["@alice", "@" + "a" * 15])
def test_a_handle_sent_with_its_at_sign_is_told_so(handle: str) -> None:
    with pytest.raises(InvalidInput, match="starts with '@'"):
        validation.check_handle(handle)
