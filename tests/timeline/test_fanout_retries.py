"""A destination that does not answer gets its fan-out parked, in order,
while the other destinations carry on (``shard/parked.py``,
``FanoutWorker._drain_one``; ``drain_parked`` steps through every queue)."""

from __future__ import annotations

import asyncio

import pytest

from murmur.slots import slot_for_user
from murmur.v1 import murmur_pb2 as pb
from murmur.v1 import shard_pb2
from shard import fanout as fanout_module
from shard import keys
from shard import parked as parked_module
from tests.timeline.model import Model


def user_on(model: Model, cluster, shard: int, key) -> int:
    """A new user whose slot lives on ``shard``."""
    n = 0
    while True:
        user_id = model.user((key, n))
        if cluster.shard_of(user_id) == shard:
            return user_id
        n += 1


def user_beside(model: Model, cluster, other: int, key) -> int:
    """A new user on ``other``'s shard, in another slot (so one can move alone)."""
    n = 0
    while True:
        user_id = user_on(model, cluster, cluster.shard_of(other), (key, n))
        if slot_for_user(user_id) != slot_for_user(other):
            return user_id
        n += 1


def author_and_reader(make_cluster, loop):
    """A 3-shard cluster, an author on shard 0 and a follower on shard 2, settled."""
    cluster = make_cluster(shards=3)
    model = Model(cluster, loop)
    author = user_on(model, cluster, 0, "author")
    reader = user_on(model, cluster, 2, "reader")
    follow(model, reader, author)
    model.settle()
    return cluster, model, author, reader


def two_readers_in_two_slots(make_cluster, loop, authors: list[str]):
    """A 3-shard cluster whose shard 2 holds two readers in different slots,
    the first following ``authors[0]``, the second the last author (all on
    shard 0); settled, then shard 0 cut off from shard 2."""
    cluster = make_cluster(shards=3)
    model = Model(cluster, loop)
    ids = [user_on(model, cluster, 0, key) for key in authors]
    first = user_on(model, cluster, 2, "first reader")
    second = user_beside(model, cluster, first, "second reader")
    follow(model, first, ids[0])
    follow(model, second, ids[-1])
    model.settle()
    cluster.pool.unreachable.add(2)
    return cluster, model, ids, first, second


def follow(model: Model, follower: int, followee: int) -> None:
    model.call("Follow", pb.FollowRequest(follower_id=follower, followee_id=followee))
    model.oracle.follow(follower, followee)


def post(model: Model, author: int, text: str) -> int:
    tweet = model.call("PostTweet", pb.PostTweetRequest(user_id=author, text=text))
    model.oracle.post(tweet.tweet_id, author, tweet.text)
    return tweet.tweet_id


def move_slot(cluster, user_id: int, target: int) -> None:
    """Move ``user_id``'s slot to ``target`` by hand: copy its keys, drop
    them at the source, and give every shard and the router the new map."""
    slot = slot_for_user(user_id)
    source = cluster.shard_of(user_id)
    prefix = keys.slot_prefix(slot)
    source_db, target_db = cluster.states[source].store.db, cluster.states[target].store.db
    for key, value in list(source_db.iterator(prefix=prefix)):
        target_db.put(key, value)
        source_db.delete(key)
    new_map = shard_pb2.SlotMap()
    new_map.CopyFrom(cluster.states[source].ownership.slot_map)
    new_map.version += 1
    new_map.owners[slot] = target
    for state in cluster.states.values():
        state.ownership.adopt(new_map)
    cluster.table.install(new_map)


def test_a_down_shard_holds_back_no_other_shard(make_cluster, loop) -> None:
    """Thirty posts to forty followers each are 24 rounds' worth at a budget
    of 50 entries: all of them reach shards 0 and 1 while shard 2 is down,
    and shard 2 gets every post, edit and delete, in order, when it is back."""
    cluster = make_cluster(shards=3, fanout_batch_entries=50)
    model = Model(cluster, loop)
    authors = [user_on(model, cluster, 0, ("author", n)) for n in range(3)]
    near = [user_on(model, cluster, n % 2, ("near", n)) for n in range(20)]
    far = [user_on(model, cluster, 2, ("far", n)) for n in range(20)]
    for author in authors:
        for reader in near + far:
            follow(model, reader, author)
    model.settle()

    cluster.pool.down.add(2)
    tweets = [post(model, authors[n % 3], f"t{n}") for n in range(30)]
    model.edit(tweets[3], "t3, edited")
    model.delete(tweets[5])
    model.settle()
    for reader in near:
        model.check_home(reader)
    parked = cluster.states[0].parked
    assert parked.destinations() == [2] and parked.total() > 0
    assert cluster.states[0].outbox.backlog() == 0  # nothing held back in the outbox

    cluster.pool.down.discard(2)
    # a delete made once shard 2 answers again still waits behind the post
    model.delete(tweets[7])
    assert model.run(cluster.workers[0].run_round())
    assert parked.holds(2)
    model.settle()
    assert cluster.backlog() == 0
    for reader in far + near:
        model.check_home(reader)


def test_parked_ops_for_users_that_moved_are_refreshed(make_cluster, loop) -> None:
    """Parked for shard 2: a post, an edit's post and a follow. The far
    user's slot then moves to shard 1, and newer changes reach shard 1
    directly (the delete, the edit, the unfollow). Replayed as parked, the
    old ops would bring back the deleted tweet, the old text and the edge;
    refreshed from the sender's data, they agree with what happened."""
    cluster = make_cluster(shards=3)
    model = Model(cluster, loop)
    author = user_on(model, cluster, 0, "author")
    other = user_on(model, cluster, 0, "other")
    reader = user_on(model, cluster, 2, "reader")
    follow(model, reader, author)
    model.settle()

    cluster.pool.unreachable.add(2)  # the router still reaches it
    doomed = post(model, author, "doomed")
    changed = post(model, author, "first text")
    model.call("Follow", pb.FollowRequest(follower_id=other, followee_id=reader))
    model.settle()
    assert cluster.states[0].parked.destinations() == [2]

    move_slot(cluster, reader, 1)  # shard 2 stays unreachable: its queue is re-routed
    model.delete(doomed)
    model.edit(changed, "second text")
    model.call("Unfollow", pb.UnfollowRequest(follower_id=other, followee_id=reader))
    model.settle()

    assert cluster.backlog() == 0
    model.check_home(reader)
    assert [t.text for t in model.home_page(reader).tweets] == ["second text"]
    followers = model.call("GetUser", pb.GetUserRequest(user_id=reader)).follower_count
    assert followers == 0


def test_parked_ops_survive_a_restart(make_cluster, loop, tmp_path) -> None:
    """The queue is on disk: a reopened shard still holds it, and drains it."""
    cluster, model, author, reader = author_and_reader(make_cluster, loop)
    cluster.pool.down.add(2)
    post(model, author, "while shard 2 was down")
    model.settle()
    held = dict(cluster.states[0].parked.counts)

    from shard.parked import ParkedQueues

    reopened = ParkedQueues(cluster.states[0].store)
    assert dict(reopened.counts) == held and reopened.holds(2)
    cluster.pool.down.discard(2)
    model.settle()
    model.check_home(reader)
    assert ParkedQueues(cluster.states[0].store).total() == 0


def test_a_slot_that_moved_away_and_back_gets_no_stale_op(make_cluster, loop, monkeypatch):
    """Parked for shard 2: a post for r2 (at the front), then a post for r.
    r's slot moves to shard 1 while shard 2 is unreachable (the front chunk
    cannot go, so r's op stays), the post is deleted (shard 1 hears it
    directly), and r's slot moves back. Sent as parked, the put would bring
    the deleted tweet back for good; rebuilt when it is sent, it deletes."""
    monkeypatch.setattr(parked_module, "CHUNK_OPS", 1)
    cluster, model, (author, author2), reader, _ = two_readers_in_two_slots(
        make_cluster, loop, ["author", "author2"]
    )
    worker = cluster.workers[0]
    post(model, author2, "front of the queue")
    doomed = post(model, author, "doomed")
    while model.run(worker.run_round()):
        pass
    assert cluster.states[0].parked.counts[2] == 2

    move_slot(cluster, reader, 1)
    assert not model.run(worker.drain_parked())  # the front still waits for shard 2
    model.delete(doomed)
    while model.run(worker.run_round()):
        pass
    move_slot(cluster, reader, 2)

    cluster.pool.unreachable.discard(2)
    model.settle()
    assert cluster.backlog() == 0
    assert "doomed" not in [t.text for t in model.home_page(reader).tweets]
    model.check_home(reader)


def test_a_hung_destination_holds_back_no_other_parked_queue(make_cluster, loop, monkeypatch):
    """Shard 1 takes messages and never answers (each drain waits out its
    deadline); shard 2 is back. Shard 2's queue drains meanwhile: it has a
    drain of its own, not a turn in a pass that waits for the slowest."""
    monkeypatch.setattr(parked_module, "CHUNK_OPS", 2)
    monkeypatch.setattr(fanout_module, "DELIVER_TIMEOUT_S", 30.0)
    cluster = make_cluster(shards=3)
    model = Model(cluster, loop)
    author = user_on(model, cluster, 0, "author")
    for shard in (1, 2):
        follow(model, user_on(model, cluster, shard, ("reader", shard)), author)
    model.settle()

    worker = cluster.workers[0]
    cluster.pool.unreachable.update({1, 2})
    for n in range(40):
        post(model, author, f"t{n}")
        model.run(worker.run_round())  # one op per round for each destination
    assert dict(cluster.states[0].parked.counts) == {1: 40, 2: 40}
    cluster.pool.unreachable.discard(2)
    real_stream = worker.peers.stream
    hung = asyncio.Event()

    class Hung:
        async def execute(self, calls, timeout):
            await hung.wait()  # never set: a host that takes bytes and says nothing
            raise ConnectionError("unreachable")

    monkeypatch.setattr(
        worker.peers, "stream", lambda shard_id: Hung() if shard_id == 1 else real_stream(shard_id)
    )

    async def drain_until_shard_2_is_done() -> None:
        task = asyncio.get_running_loop().create_task(worker._drain_forever())
        try:
            while cluster.states[0].parked.counts[2]:
                await asyncio.sleep(0.01)
        finally:
            worker._stopping = True
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    model.run(asyncio.wait_for(drain_until_shard_2_is_done(), timeout=20))
    assert cluster.states[0].parked.counts[1] == 40


def test_a_destination_moving_slots_is_retried_not_parked(make_cluster, loop) -> None:
    """UNAVAILABLE from a shard that answers (slots frozen for a move's last
    step, or stopping) is a pause: the round is retried, nothing parked."""
    cluster, model, author, reader = author_and_reader(make_cluster, loop)
    ownership = cluster.states[2].ownership
    ownership.frozen[slot_for_user(reader)] = "slots are moving; retry shortly"
    post(model, author, "during the freeze")
    with pytest.raises(fanout_module.SlotsMoving):
        model.run(cluster.workers[0].run_round())
    assert cluster.states[0].parked.total() == 0
    ownership.frozen.clear()
    model.settle()
    model.check_home(reader)


def test_a_drain_applies_its_local_share_before_it_awaits(make_cluster, loop, monkeypatch):
    """A parked put for u and v; u's slot moves to the sender itself. While
    the drain waits on shard 2 for v's share, the tweet is deleted and the
    delete applied for u here at once: u's share of the put must have been
    applied before that wait, not after it (it would bring the tweet back)."""
    cluster, model, (author,), u, v = two_readers_in_two_slots(make_cluster, loop, ["author"])
    worker = cluster.workers[0]
    doomed = post(model, author, "doomed")
    model.run(worker.run_round())
    move_slot(cluster, u, 0)
    cluster.pool.unreachable.discard(2)

    real_stream = worker.peers.stream
    gate, entered = asyncio.Event(), asyncio.Event()

    class Slow:
        def __init__(self, inner):
            self.inner = inner

        async def execute(self, calls, timeout):
            entered.set()
            await gate.wait()  # shard 2 is slow to answer
            return await self.inner.execute(calls, timeout)

    monkeypatch.setattr(worker.peers, "stream", lambda shard_id: Slow(real_stream(shard_id)))

    async def scenario() -> None:
        drain = asyncio.get_running_loop().create_task(worker._drain_one(2))
        await entered.wait()
        model.oracle.delete(doomed)
        await cluster.call("DeleteTweet", pb.DeleteTweetRequest(tweet_id=doomed, user_id=author))
        assert await worker.run_round()  # the delete, applied for u at once
        gate.set()
        assert await drain

    model.run(scenario())
    monkeypatch.setattr(worker.peers, "stream", real_stream)
    model.settle()
    assert cluster.backlog() == 0
    model.check_home(u)
    model.check_home(v)


def test_news_of_a_status_rebuilt_bigger_than_parked_goes_in_pieces() -> None:
    """A celebrity's status costs its scan per follower; demoted before it
    is sent, it carries a backfill for each: the rest waits its turn."""
    sync = shard_pb2.FollowSync(followee_id=1, follower_ids=list(range(100, 300)))
    sync.tweets.extend(pb.Tweet(tweet_id=n, user_id=1) for n in range(1, 51))
    big = shard_pb2.DeliveryOp(follow_sync=sync)
    small = shard_pb2.DeliveryOp(inbox_delete=shard_pb2.InboxDelete(owner_ids=[7], tweet_id=3))
    now, later = fanout_module.within_budget([big, small], 4_000)
    assert [fanout_module.delivery_cost(op) for op in now] == [57 * 70]
    assert list(now[0].follow_sync.follower_ids) == list(range(100, 157))
    assert list(later[0].follow_sync.follower_ids) == list(range(157, 300))
    assert later[1] == small
    assert fanout_module.within_budget([small, small], 1) == ([small], [small])
