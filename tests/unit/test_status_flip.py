"""Copies of an author's tweets in followers' inboxes across changes of
the author's celebrity status."""

from __future__ import annotations

from pathlib import Path

from murmur.v1 import murmur_pb2
from shard.settings import ShardSettings
from tests.unit.test_shard_servicer import Shard, follow_sync, inbox_put


def test_a_status_flip_drops_copies_the_promotion_never_removed(tmp_path: Path) -> None:
    """A tweet deleted while its author was a celebrity is not fanned out.
    If the author is demoted before the promotion's sync is planned, both
    syncs go out as ordinary; the copy the promotion would have removed
    must go all the same, and the backfill brings back only live tweets."""
    shard = Shard(tmp_path / "db", ShardSettings())
    star, fan = shard.create_user("star"), shard.create_user("fan")
    shard.follow(fan, star)
    deleted, kept = shard.post(star, "oops"), shard.post(star, "fine")
    shard.deliver(inbox_put([fan], deleted), inbox_put([fan], kept))
    edited = murmur_pb2.Tweet()
    edited.CopyFrom(kept)
    edited.text = "fine, edited while a celebrity"
    # versions 1 (promoted) and 2 (demoted) both arrive as ordinary syncs
    for _ in range(2):
        shard.deliver(follow_sync(star, [fan], celebrity=False, version=2, tweets=[edited]))
        assert shard.stored_inbox_ids(fan) == [kept.tweet_id]
        assert [t.text for t in shard.inbox(fan).page.tweets] == [edited.text]
    # a sync at the version the edge already has (a follow's own) does not
    # scan the inbox again: what is there stays
    shard.deliver(inbox_put([fan], deleted))
    shard.deliver(follow_sync(star, [fan], celebrity=False, version=2, tweets=[edited]))
    assert shard.stored_inbox_ids(fan) == [kept.tweet_id, deleted.tweet_id]
    shard.close()
