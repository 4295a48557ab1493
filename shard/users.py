"""User profiles, the handle index and the per-user counters."""

from __future__ import annotations

import hashlib

from google.protobuf.timestamp_pb2 import Timestamp

from murmur.errors import already_exists, invalid, not_found
from murmur.ids import IdClock, millis_of_id, now_ms
from murmur.slots import slot_for_handle, slot_for_user
from murmur.v1 import murmur_pb2, shard_pb2
from murmur.validation import PROFILE_LIMITS
from shard import keys
from shard.settings import is_celebrity
from shard.store import Txn


def timestamp_ms(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def text_digest(text: str) -> int:
    """Eight bytes standing for ``text`` in a CreatedProfile."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def profile_of(user: murmur_pb2.User) -> shard_pb2.CreatedProfile:
    return shard_pb2.CreatedProfile(
        display_name_digest=text_digest(user.display_name), bio_digest=text_digest(user.bio)
    )


def _same_request(
    earlier: shard_pb2.UserRecord, handle: str, display_name: str, bio: str
) -> shard_pb2.UserRecord:
    """The user an earlier attempt made, if this is its retry: the same
    request_id with another profile is a client's bug, and answering OK
    would drop the new profile without a word. The comparison is with the
    profile as created, which UpdateUser may since have changed."""
    user = earlier.user
    made = earlier.created_profile if earlier.HasField("created_profile") else profile_of(user)
    differing = [] if handle == user.handle else ["handle"]
    if made.display_name_digest != text_digest(display_name):
        differing.append("display_name")
    if made.bio_digest != text_digest(bio):
        differing.append("bio")
    if differing:
        raise invalid(
            f"request_id {earlier.create_request_id!r} was used for user {user.user_id} "
            f"(@{user.handle}) with another {' and '.join(differing)}; a retry repeats its "
            "request unchanged"
        )
    return earlier


class UserStore:
    def __init__(self, clock: IdClock) -> None:
        self.clock = clock

    def create(
        self,
        txn: Txn,
        handle: str,
        display_name: str,
        bio: str,
        threshold: int,
        request_id: str = "",
    ) -> shard_pb2.UserRecord:
        """Mint a user in the handle's slot: index and profile in one batch.
        A handle already taken by an earlier attempt with the same non-empty
        ``request_id`` returns that user: the retry of a call whose answer
        was lost."""
        slot = slot_for_handle(handle)
        handle_key = keys.handle(slot, handle)
        taken = txn.get(handle_key)
        if taken is not None:
            earlier = self.get(txn, keys.read_u64(taken))
            if request_id and earlier is not None and earlier.create_request_id == request_id:
                return _same_request(earlier, handle, display_name, bio)
            raise already_exists(f"handle {handle!r} is already taken (handles ignore case)")
        load_clock(txn, self.clock, slot)
        user_id = self.clock.next_user_id(slot)
        record = shard_pb2.UserRecord(
            user=murmur_pb2.User(
                user_id=user_id,
                handle=handle,
                display_name=display_name,
                bio=bio,
                created_at=timestamp_ms(millis_of_id(user_id)),
                celebrity=is_celebrity(False, 0, threshold),
            ),
            create_request_id=request_id,
        )
        txn.put(handle_key, keys.u64(user_id))
        txn.put(keys.clock(slot), keys.u64(self.clock.floor(slot)))
        self.put(txn, record)
        return record

    def update_profile(
        self, txn: Txn, record: shard_pb2.UserRecord, request: murmur_pb2.UpdateUserRequest
    ) -> bool:
        """Apply the profile fields set in ``request``; False if they change
        nothing (and nothing is written, so a retry costs no write)."""
        user = record.user
        changes = {
            name: getattr(request, name)
            for name in PROFILE_LIMITS
            if request.HasField(name) and getattr(request, name) != getattr(user, name)
        }
        if not changes:
            return False
        if record.create_request_id and not record.HasField("created_profile"):
            record.created_profile.CopyFrom(profile_of(user))
        for name, value in changes.items():
            setattr(user, name, value)
        user.profile_updated_at.CopyFrom(timestamp_ms(now_ms()))
        self.put(txn, record)
        return True

    def get(self, txn: Txn, user_id: int) -> shard_pb2.UserRecord | None:
        raw = txn.get(keys.user(slot_for_user(user_id), user_id))
        if raw is None:
            return None
        return shard_pb2.UserRecord.FromString(raw)

    def require(self, txn: Txn, user_id: int, role: str = "user") -> shard_pb2.UserRecord:
        record = self.get(txn, user_id)
        if record is None:
            raise not_found(f"{role} {user_id} does not exist")
        return record

    def by_handle(self, txn: Txn, handle: str) -> shard_pb2.UserRecord | None:
        raw = txn.get(keys.handle(slot_for_handle(handle), handle))
        if raw is None:
            return None
        return self.get(txn, keys.read_u64(raw))

    def put(self, txn: Txn, record: shard_pb2.UserRecord) -> None:
        user_id = record.user.user_id
        txn.put(keys.user(slot_for_user(user_id), user_id), record.SerializeToString())


def load_clock(txn: Txn, clock: IdClock, slot: int) -> None:
    """Seed a slot's id clock from its persisted floor the first time it is used."""
    if clock.known(slot):
        return
    raw = txn.get(keys.clock(slot))
    clock.restore(slot, keys.read_u64(raw) if raw else 0)
