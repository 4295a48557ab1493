"""Parked fan-out queues: order, counts across restarts, chunking, the
slots a move must wait for, and cutting an op by its users' owners."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from murmur.ids import MURMUR_EPOCH_MS, compose_tweet_id
from murmur.slots import SLOT_COUNT, slot_for_user
from murmur.v1 import murmur_pb2, shard_pb2
from shard import parked as parked_module
from shard.delivery_ops import source_slot, split_by_owner
from shard.fanout import delivery_cost
from shard.parked import ParkedQueues
from shard.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(str(tmp_path / "db"))
    yield opened
    opened.close()


def add(followee: int, follower: int) -> shard_pb2.DeliveryOp:
    return shard_pb2.DeliveryOp(
        add_follower=shard_pb2.AddFollower(followee_id=followee, follower_id=follower)
    )


def front(queues: ParkedQueues, destination: int, budget: int = 10**9):
    return queues.peek(destination, budget, lambda op: 1)


def park(queues: ParkedQueues, store: Store, destination: int, ops) -> None:
    txn = store.txn()
    queues.park(txn, destination, ops)
    txn.commit()


def test_a_queue_keeps_its_order_and_its_count_across_a_reopen(store: Store) -> None:
    queues = ParkedQueues(store)
    park(queues, store, 2, [add(1, n) for n in range(5)])
    park(queues, store, 7, [add(9, 9)])
    park(queues, store, 2, [add(1, n) for n in range(5, 8)])
    reopened = ParkedQueues(store)
    assert dict(reopened.counts) == {2: 8, 7: 1} and reopened.destinations() == [2, 7]
    chunk = front(reopened, 2)
    assert [op.add_follower.follower_id for _seq, op in chunk] == list(range(8))
    reopened.remove(2, chunk[:3])
    assert [op.add_follower.follower_id for _seq, op in front(reopened, 2)] == list(range(3, 8))
    # appending after a reopen continues the sequence: nothing is overwritten
    park(reopened, store, 2, [add(1, 99)])
    assert [op.add_follower.follower_id for _s, op in front(ParkedQueues(store), 2)][-1] == 99
    assert ParkedQueues(store).counts[2] == 6


def test_a_queue_found_empty_stops_holding_its_destination(store: Store) -> None:
    """A park whose batch never committed counted ops that are not there."""
    queues = ParkedQueues(store)
    queues.park(store.txn(), 3, [add(1, 2)])  # never committed
    assert queues.holds(3)
    assert front(queues, 3) == []
    assert not queues.holds(3) and queues.total() == 0


def test_remove_can_requeue_ops_for_other_destinations(store: Store) -> None:
    queues = ParkedQueues(store)
    park(queues, store, 2, [add(1, 2), add(1, 3)])
    queues.remove(2, front(queues, 2), requeue={5: [add(1, 2)], 2: [add(1, 3)]})
    again = ParkedQueues(store)
    assert dict(again.counts) == {2: 1, 5: 1}


def test_a_chunk_is_bounded_by_bytes(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parked_module, "CHUNK_BYTES", 40)
    queues = ParkedQueues(store)
    park(queues, store, 1, [add(10**12, n) for n in range(10)])  # ~14 bytes each
    assert 1 < len(front(queues, 1)) < 10


def test_a_chunk_is_bounded_by_the_work_it_gives_its_destination(store: Store) -> None:
    """As a fan-out round is: a chunk of big pages would stall the
    destination's loop past the sender's deadline, and be sent forever."""
    queues = ParkedQueues(store)
    put = shard_pb2.DeliveryOp(
        inbox_delete=shard_pb2.InboxDelete(owner_ids=list(range(1, 1001)), tweet_id=5)
    )
    park(queues, store, 1, [put] * 10)
    assert len(queues.peek(1, 4_000, delivery_cost)) == 4
    assert len(queues.peek(1, 10, delivery_cost)) == 1  # always at least one op


def test_only_ops_reading_a_slot_hold_back_its_move(store: Store) -> None:
    """However many ops are parked, a move of slots none of them reads goes."""
    queues = ParkedQueues(store)
    follower = 12
    park(queues, store, 4, [add(30, follower)] * 20_000)
    unrelated = set(range(SLOT_COUNT)) - {slot_for_user(follower)}
    assert not queues.needs(unrelated)
    assert queues.needs({slot_for_user(follower)})
    assert ParkedQueues(store).needs({slot_for_user(follower)})  # counted again at start-up


def test_a_move_waits_for_ops_refreshed_from_the_moving_slots(store: Store) -> None:
    queues = ParkedQueues(store)
    author, follower = 11, 12
    tweet = murmur_pb2.Tweet(
        tweet_id=compose_tweet_id(MURMUR_EPOCH_MS + 1000, slot_for_user(author), 1), user_id=author
    )
    park(
        queues,
        store,
        4,
        [
            shard_pb2.DeliveryOp(inbox_put=shard_pb2.InboxPut(owner_ids=[5], tweet=tweet)),
            add(30, follower),
        ],
    )
    assert source_slot(front(queues, 4)[0][1]) == slot_for_user(author)
    assert queues.needs({slot_for_user(author)})
    assert queues.needs({slot_for_user(follower)})
    unrelated = set(range(SLOT_COUNT)) - {slot_for_user(author), slot_for_user(follower)}
    assert not queues.needs(unrelated)
    queues.remove(4, front(queues, 4))
    assert not queues.needs({slot_for_user(author), slot_for_user(follower)})


def test_split_by_owner_cuts_an_op_by_its_users_owners() -> None:
    users = list(range(1, 40))
    op = shard_pb2.DeliveryOp(inbox_delete=shard_pb2.InboxDelete(owner_ids=users, tweet_id=77))
    parts = split_by_owner(op, lambda slot: slot % 3)
    assert sorted(u for part in parts.values() for u in part.inbox_delete.owner_ids) == users
    for owner, part in parts.items():
        assert part.inbox_delete.tweet_id == 77
        assert all(slot_for_user(u) % 3 == owner for u in part.inbox_delete.owner_ids)
    single = split_by_owner(add(5, 6), lambda slot: 9)
    assert list(single) == [9] and single[9].add_follower.follower_id == 6


def test_a_move_waits_for_a_queued_follow_of_a_moving_follower() -> None:
    """A follow's far side still in the outbox is rebuilt from the
    follower's edge if it gets parked: the follower's slot must not move
    away first (its old owner would send the follow as it was, after a
    newer unfollow)."""
    from murmur.slots import slot_for_user as slot_of
    from shard.outbox import add_follower_record, record_slot, remove_follower_record

    follower, followee = 41, 42
    for record in (add_follower_record(followee, follower), remove_follower_record(followee, 7)):
        op_follower = getattr(record.direct, record.direct.WhichOneof("op")).follower_id
        assert record_slot(record) == slot_of(op_follower) != slot_of(followee)
