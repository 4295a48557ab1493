"""A destination that does not answer gets its fan-out parked, in order,
while the other destinations carry on (``shard/parked.py``,
``FanoutWorker.drain_parked``)."""

from __future__ import annotations

from murmur.slots import slot_for_user
from murmur.v1 import murmur_pb2 as pb
from murmur.v1 import shard_pb2
from shard import keys
from tests.timeline.model import Model


def user_on(model: Model, cluster, shard: int, key) -> int:
    """A new user whose slot lives on ``shard``."""
    n = 0
    while True:
        user_id = model.user((key, n))
        if cluster.shard_of(user_id) == shard:
            return user_id
        n += 1


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
    cluster = make_cluster(shards=3)
    model = Model(cluster, loop)
    author = user_on(model, cluster, 0, "author")
    reader = user_on(model, cluster, 2, "reader")
    follow(model, reader, author)
    model.settle()
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
