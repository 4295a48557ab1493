"""The input rules every caller can rely on, checked once at the router.

Each check raises ``InvalidInput`` naming the field and the limit, which the
servicers turn into INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
import unicodedata

HANDLE_PATTERN = re.compile(r"[A-Za-z0-9_]{1,15}")
MAX_HANDLE = 15
MAX_DISPLAY_NAME = 50
MAX_BIO = 160
# the profile fields UpdateUser may change, and their limits
PROFILE_LIMITS = {"display_name": MAX_DISPLAY_NAME, "bio": MAX_BIO}
MAX_TWEET = 280
MAX_REQUEST_ID = 64
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 200
# The most accounts one user may follow (Twitter's own long-standing limit):
# every home read past the inbox's complete stretch, every celebrity pull
# and every unfollow's inbox scan grows with it, so no caller may grow it
# without end.
MAX_FOLLOWING = 5_000
# Router -> shard: the most tweets one per_author PullTimelines may return
# (authors x limit); the shard enforces it, the router splits its pulls by it.
MAX_PER_AUTHOR_TWEETS = 20_000
# Unicode category Cc (C0 controls, DEL, C1 controls) except tab and newline:
# one regex search in C (0.8 µs for a 100-character tweet, where a category
# lookup per character took 8.8 µs).
_FORBIDDEN_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# No code point's canonical decomposition is longer than 4, so NFC shrinks a
# text to no less than a quarter of its length: one longer than 4x a limit
# is refused before normalising it (a 60 MB text took the router 2.4 s).
NFC_MAX_SHRINK = 4
# Code points that draw nothing yet are not white space: format characters
# (zero-width space, BOM), combining marks with no base, and blank fillers.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp"})
_BLANK_FILLERS = frozenset("\u115f\u1160\u2800\u3164\uffa0")


class InvalidInput(ValueError):
    """A request field breaks a documented rule."""


def check_handle(handle: str) -> str:
    if not handle:
        raise InvalidInput("handle is required (1-15 characters of A-Z a-z 0-9 _)")
    if handle.startswith("@"):
        raise InvalidInput(f"handle {handle[:20]!r} starts with '@': send the handle without it")
    if len(handle) > MAX_HANDLE:
        raise InvalidInput(f"handle is {len(handle)} characters; the limit is {MAX_HANDLE}")
    if not HANDLE_PATTERN.fullmatch(handle):
        raise InvalidInput("handle may contain only A-Z a-z 0-9 and _")
    return handle


def _check_controls(field: str, value: str) -> None:
    found = _FORBIDDEN_CONTROL.search(value)
    if found is not None:
        raise InvalidInput(f"{field} contains control character U+{ord(found.group()):04X}")


def _check_raw_length(field: str, value: str, limit: int) -> None:
    if len(value) > NFC_MAX_SHRINK * limit:
        raise InvalidInput(
            f"{field} is {len(value)} characters before NFC normalisation; the limit is "
            f"{limit} after it, and normalising cannot bring it that low"
        )


def _visible(char: str) -> bool:
    return (
        not char.isspace()
        and unicodedata.category(char) not in _INVISIBLE_CATEGORIES
        and char not in _BLANK_FILLERS
    )


def check_short_text(field: str, value: str, limit: int) -> str:
    """display_name and bio: optional, at most ``limit`` code points after NFC."""
    _check_raw_length(field, value, limit)
    normalized = unicodedata.normalize("NFC", value)
    if len(normalized) > limit:
        raise InvalidInput(f"{field} is {len(normalized)} characters; the limit is {limit}")
    _check_controls(field, normalized)
    return normalized


def check_tweet_text(text: str) -> str:
    """1-280 code points after NFC normalisation, at least one of them
    visible: not white space, a format character (zero-width space, BOM), a
    combining mark or a blank filler (U+2800), which would post a tweet that
    shows nothing. The first visible character usually ends the search."""
    _check_raw_length("text", text, MAX_TWEET)
    normalized = unicodedata.normalize("NFC", text)
    if len(normalized) > MAX_TWEET:
        raise InvalidInput(
            f"text is {len(normalized)} characters after NFC normalisation; "
            f"the limit is {MAX_TWEET}"
        )
    _check_controls("text", normalized)
    if not any(_visible(char) for char in normalized):
        raise InvalidInput(
            "text must contain at least one visible character (not only white space, "
            "zero-width or format characters, combining marks or blank fillers)"
        )
    return normalized


def check_request_id(request_id: str) -> str:
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidInput(
            f"request_id is {len(request_id)} characters; the limit is {MAX_REQUEST_ID}"
        )
    return request_id


def check_id(field: str, value: int) -> int:
    if value <= 0:
        raise InvalidInput(f"{field} is required (a positive 64-bit id)")
    return value


def page_size(requested: int) -> int:
    """0 means the default (20); above 200 means 200; negative is an error."""
    if requested < 0:
        raise InvalidInput(
            f"page_size is {requested}; it must be 0 or more "
            f"(0 means {DEFAULT_PAGE_SIZE}, above {MAX_PAGE_SIZE} means {MAX_PAGE_SIZE})"
        )
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)
