"""UpdateUser on the shard: the profile changes durably, an update to the
values a user has writes nothing, and a CreateUser retry is still checked
against the profile it created, not the changed one."""

from __future__ import annotations

import grpc

from murmur.v1 import murmur_pb2
from tests.unit import test_shard_servicer as harness

Shard = harness.Shard
open_shard, shard = harness.open_shard, harness.shard  # the servicer tests' fixtures


def update(shard: Shard, user_id: int, **fields: str) -> murmur_pb2.User:
    return shard.ok("UpdateUser", murmur_pb2.UpdateUserRequest(user_id=user_id, **fields))


def test_only_the_fields_set_change_and_the_change_survives_a_restart(shard: Shard) -> None:
    user_id = shard.create_user("carol", display_name="Carol", bio="hi")
    assert not shard.user(user_id).user.HasField("profile_updated_at")
    changed = update(shard, user_id, bio="")
    assert (changed.display_name, changed.bio) == ("Carol", "")
    assert changed.HasField("profile_updated_at")
    changed = update(shard, user_id, display_name="C. Carol")
    assert (changed.handle, changed.display_name, changed.bio) == ("carol", "C. Carol", "")
    again = shard.reopen()
    assert again.user(user_id).user == changed


def test_only_users_made_with_a_request_id_keep_their_created_profile(shard: Shard) -> None:
    plain = shard.create_user("frank", display_name="Frank")
    update(shard, plain, display_name="F.")
    assert not shard.user(plain).HasField("created_profile")
    request = murmur_pb2.CreateUserRequest(handle="gina", display_name="Gina", request_id="r")
    keyed = shard.ok("CreateUser", request).user_id
    update(shard, keyed, display_name="G.")
    kept = shard.user(keyed).created_profile
    assert kept.display_name_digest and kept.bio_digest  # digests, not a copy
    assert len(kept.SerializeToString()) == 18


def test_an_update_to_the_values_held_writes_nothing(shard: Shard) -> None:
    user_id = shard.create_user("dave", display_name="Dave")
    before = shard.user(user_id)
    same = update(shard, user_id, display_name="Dave", bio="")
    assert same == before.user and not same.HasField("profile_updated_at")
    assert shard.user(user_id) == before


def test_an_unknown_user_is_not_found(shard: Shard) -> None:
    request = murmur_pb2.UpdateUserRequest(user_id=harness.ghost_in(0), bio="x")
    details = shard.fails("UpdateUser", request, grpc.StatusCode.NOT_FOUND)
    assert "does not exist" in details


def test_create_retries_are_checked_against_the_profile_as_created(shard: Shard) -> None:
    def create(**fields: str):
        request = murmur_pb2.CreateUserRequest(handle="erin", request_id="r1", **fields)
        return shard.call("CreateUser", request)

    first, _, code, _ = create(display_name="Erin", bio="b")
    assert code is harness.OK
    update(shard, first.user_id, display_name="Erin E.", bio="new")
    update(shard, first.user_id, bio="newer")  # the created profile is kept once
    retried, _, code, details = create(display_name="Erin", bio="b")
    assert code is harness.OK, details
    assert (retried.user_id, retried.display_name, retried.bio) == (
        first.user_id,
        "Erin E.",
        "newer",
    )
    _, _, code, details = create(display_name="Erin E.", bio="newer")
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "with another display_name and bio" in details
