"""The shard's storage keys: every byte layout lives here.

Every key that belongs to a slot starts with the slot as 2 big-endian bytes,
so one slot's data is one contiguous range (migration, backup and stats are
range scans). Integers are 8-byte big-endian so LevelDB order is numeric
order; newest-first ranges store the inverted id (``MAX - id``) because
forward scans are ~1.5x faster than reverse ones.

    slot | b"u" | user_id                   -> UserRecord
    slot | b"h" | handle.lower()            -> user_id
    slot | b"g" | follower | followee       -> FollowEdge (following, on the follower's slot)
    slot | b"f" | followee | follower       -> b"" (followers, on the followee's slot)
    slot | b"k" | follower | celebrity      -> b"" (followed celebrities, read-time pulls)
    slot | b"t" | author | ~tweet_id        -> Tweet (the author's timeline)
    slot | b"T" | tweet_id                  -> author user_id (GetTweet by id)
    slot | b"r" | author | request_id       -> tweet_id + text digest (PostTweet retries;
                                               8 bytes, without the digest, before 2026-12)
    slot | b"i" | owner | ~tweet_id         -> Tweet (home inbox copy)
    slot | b"m" | owner                     -> InboxMeta (size, exact_from)
    slot | b"c"                             -> id clock floor (ms)

Shard-local keys (not part of any slot) start with 0xFFFF:

    FFFF | b"o" | seq                       -> OutboxRecord (fan-out still to do)
    FFFF | b"p" | dest_shard | seq          -> DeliveryOp (parked for a shard that was down)
    FFFF | b"s" | name                      -> shard metadata (id, slot map)
"""

from __future__ import annotations

import hashlib
import struct

from murmur.slots import SLOT_COUNT

U64 = struct.Struct(">Q")
SLOT = struct.Struct(">H")
MAX_U64 = (1 << 64) - 1
LOCAL = b"\xff\xff"

USER = b"u"
HANDLE = b"h"
FOLLOWING = b"g"
FOLLOWERS = b"f"
CELEBRITY_FOLLOWED = b"k"
TIMELINE = b"t"
TWEET_AUTHOR = b"T"
REQUEST = b"r"
INBOX = b"i"
INBOX_META = b"m"
CLOCK = b"c"
OUTBOX = b"o"
PARKED = b"p"
SHARD_META = b"s"


def u64(value: int) -> bytes:
    return U64.pack(value)


def inverted(value: int) -> bytes:
    """Big-endian bytes that sort newest (largest id) first."""
    return U64.pack(MAX_U64 - value)


def read_u64(data: bytes, offset: int = 0) -> int:
    return U64.unpack_from(data, offset)[0]


def read_inverted(data: bytes, offset: int) -> int:
    return MAX_U64 - U64.unpack_from(data, offset)[0]


def slot_prefix(slot: int) -> bytes:
    return SLOT.pack(slot)


def user(slot: int, user_id: int) -> bytes:
    return SLOT.pack(slot) + USER + u64(user_id)


def handle(slot: int, handle_text: str) -> bytes:
    return SLOT.pack(slot) + HANDLE + handle_text.lower().encode("utf-8")


def following(slot: int, follower: int, followee: int) -> bytes:
    return SLOT.pack(slot) + FOLLOWING + u64(follower) + u64(followee)


def following_prefix(slot: int, follower: int) -> bytes:
    return SLOT.pack(slot) + FOLLOWING + u64(follower)


def followers(slot: int, followee: int, follower: int) -> bytes:
    return SLOT.pack(slot) + FOLLOWERS + u64(followee) + u64(follower)


def followers_prefix(slot: int, followee: int) -> bytes:
    return SLOT.pack(slot) + FOLLOWERS + u64(followee)


def celebrity_followed(slot: int, follower: int, celebrity: int) -> bytes:
    return SLOT.pack(slot) + CELEBRITY_FOLLOWED + u64(follower) + u64(celebrity)


def celebrity_followed_prefix(slot: int, follower: int) -> bytes:
    return SLOT.pack(slot) + CELEBRITY_FOLLOWED + u64(follower)


def timeline(slot: int, author: int, tweet_id: int) -> bytes:
    return SLOT.pack(slot) + TIMELINE + u64(author) + inverted(tweet_id)


def timeline_prefix(slot: int, author: int) -> bytes:
    return SLOT.pack(slot) + TIMELINE + u64(author)


def tweet_author(slot: int, tweet_id: int) -> bytes:
    return SLOT.pack(slot) + TWEET_AUTHOR + u64(tweet_id)


def request(slot: int, author: int, request_id: str) -> bytes:
    return SLOT.pack(slot) + REQUEST + u64(author) + request_id.encode("utf-8")


def text_digest(text: str) -> bytes:
    """8 bytes that tell a retry's text from another: a request_id record
    keeps it, since an edit changes the tweet's own text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def request_value(tweet_id: int, text: str) -> bytes:
    return u64(tweet_id) + text_digest(text)


def read_request(raw: bytes) -> tuple[int, bytes | None]:
    """(tweet_id, the first text's digest, or None in a record from before it was kept)."""
    return read_u64(raw[:8]), raw[8:] or None


def inbox(slot: int, owner: int, tweet_id: int) -> bytes:
    return SLOT.pack(slot) + INBOX + u64(owner) + inverted(tweet_id)


# Every slot's edge and inbox heads, built once: fan-out builds two keys per
# entry, and packing the slot and adding the table byte showed in its profile.
_FOLLOWING_HEADS = [SLOT.pack(slot) + FOLLOWING for slot in range(SLOT_COUNT)]
_INBOX_HEADS = [SLOT.pack(slot) + INBOX for slot in range(SLOT_COUNT)]


def following_keys(slots: list[int], owner_parts: list[bytes], author: int) -> list[bytes]:
    """``following(slot, owner, author)`` for many owners of one author's
    delivery, from each owner's ``u64`` packed once (``owner_parts``): fan-out
    builds millions of them, and a Python call per key showed in its profile."""
    return _per_owner(_FOLLOWING_HEADS, slots, owner_parts, u64(author))


def inbox_keys(slots: list[int], owner_parts: list[bytes], tweet_id: int) -> list[bytes]:
    """``inbox(slot, owner, tweet_id)`` for many owners, as ``following_keys``."""
    return _per_owner(_INBOX_HEADS, slots, owner_parts, inverted(tweet_id))


def _per_owner(
    heads: list[bytes], slots: list[int], owner_parts: list[bytes], tail: bytes
) -> list[bytes]:
    """head of each owner's slot + owner + the ``tail`` they all share."""
    return [heads[slot] + part + tail for slot, part in zip(slots, owner_parts, strict=True)]


def inbox_prefix(slot: int, owner: int) -> bytes:
    return SLOT.pack(slot) + INBOX + u64(owner)


def inbox_meta(slot: int, owner: int) -> bytes:
    return SLOT.pack(slot) + INBOX_META + u64(owner)


def clock(slot: int) -> bytes:
    return SLOT.pack(slot) + CLOCK


def outbox(seq: int) -> bytes:
    return LOCAL + OUTBOX + u64(seq)


def outbox_prefix() -> bytes:
    return LOCAL + OUTBOX


def parked(destination: int, seq: int) -> bytes:
    return LOCAL + PARKED + u64(destination) + u64(seq)


def parked_prefix(destination: int | None = None) -> bytes:
    """Every destination's parked operations, or one destination's."""
    return LOCAL + PARKED + (b"" if destination is None else u64(destination))


def parked_destination(key: bytes) -> int:
    return U64.unpack_from(key, len(LOCAL + PARKED))[0]


def shard_meta(name: str) -> bytes:
    return LOCAL + SHARD_META + name.encode("ascii")


# the celebrity threshold every user this shard owns was last checked against
THRESHOLD_APPLIED = shard_meta("threshold_applied")
# the slot map's change lease, on the coordinator: u64 time to live (ms) + holder
MAP_LEASE = shard_meta("map_lease")


def last_u64(key: bytes) -> int:
    """The trailing 8-byte integer of a key (the second id of an edge key)."""
    return U64.unpack_from(key, len(key) - 8)[0]


def last_inverted(key: bytes) -> int:
    """The trailing inverted id of a timeline or inbox key."""
    return MAX_U64 - U64.unpack_from(key, len(key) - 8)[0]


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        raise ValueError("prefix of only 0xff bytes has no end")
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
