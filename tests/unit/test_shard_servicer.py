"""The shard servicer through grpc_testing, on a real LevelDB in tmp_path.

Each test drives ``shard.servicer.ShardServicer`` (an aio servicer) through
``grpc_testing.server_from_dictionary`` with the adapter in
``grpc_testing_adapter``, so status codes, details and trailing metadata are
checked as a caller would see them. Deliver calls stand in for the fan-out
worker of other shards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc_testing
import pytest

from murmur.errors import WRONG_SLOT_METADATA
from murmur.ids import IdClock, compose_tweet_id, lowest_id_at, now_ms, slot_of_tweet
from murmur.slots import SLOT_COUNT, slot_for_handle, slot_for_user
from murmur.v1 import murmur_pb2, shard_pb2
from murmur.validation import MAX_FOLLOWING
from shard import keys
from shard.delivery import DeliveryApplier, trim_threshold
from shard.servicer import ShardServicer
from shard.settings import ShardSettings
from shard.state import ShardState
from tests.unit.grpc_testing_adapter import SyncServicerAdapter

SERVICE = shard_pb2.DESCRIPTOR.services_by_name["Shard"]
OK = grpc.StatusCode.OK
ALL_MINE = [0] * SLOT_COUNT
HALF = [0] * (SLOT_COUNT // 2) + [1] * (SLOT_COUNT // 2)  # shard 1 owns 2048..4095


class Shard:
    """One shard: state on a LevelDB folder, served by a grpc_testing server."""

    def __init__(
        self,
        data_dir: Path,
        settings: ShardSettings,
        owners: list[int] | None = ALL_MINE,
        opened: list[Shard] | None = None,
    ) -> None:
        self.closed = True  # until the store is open
        self.data_dir = data_dir
        self.settings = settings
        self.opened = opened if opened is not None else []
        self.opened.append(self)
        self.state = ShardState.open(str(data_dir), shard_id=0, settings=settings)
        self.closed = False
        if owners is not None and not self.state.ownership.assigned:
            addresses = {shard: f"127.0.0.1:{shard + 1}" for shard in set(owners)}
            self.state.ownership.adopt(
                shard_pb2.SlotMap(version=1, addresses=addresses, owners=owners)
            )
        self.servicer = ShardServicer(self.state, DeliveryApplier(self.state))
        self.adapter = SyncServicerAdapter(self.servicer, SERVICE)
        self.server = grpc_testing.server_from_dictionary(
            {SERVICE: self.adapter}, grpc_testing.strict_real_time()
        )

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            adapter = getattr(self, "adapter", None)
            if adapter is not None:
                adapter.close()
            self.state.store.close()

    def reopen(self) -> Shard:
        """Close and open the same folder again with default settings: what
        was stored (data, slot map, runtime settings) must come back from disk."""
        self.close()
        return Shard(self.data_dir, ShardSettings(), owners=None, opened=self.opened)

    # calling ------------------------------------------------------------------
    def call(self, method: str, request: Any) -> tuple[Any, dict[str, str], grpc.StatusCode, str]:
        rpc = self.server.invoke_unary_unary(SERVICE.methods_by_name[method], (), request, None)
        response, trailing, code, details = rpc.termination()
        return response, dict(trailing or ()), code, details

    def call_stream(self, method: str, request: Any) -> tuple[list[Any], grpc.StatusCode, str]:
        rpc = self.server.invoke_unary_stream(SERVICE.methods_by_name[method], (), request, None)
        responses = []
        while True:
            try:
                responses.append(rpc.take_response())
            except ValueError:  # "No more responses!"
                break
        _, code, details = rpc.termination()
        return responses, code, details

    def ok(self, method: str, request: Any) -> Any:
        response, _, code, details = self.call(method, request)
        assert code is OK, f"{method} failed: {code.name}: {details}"
        return response

    def fails(self, method: str, request: Any, code: grpc.StatusCode) -> str:
        response, _, got, details = self.call(method, request)
        assert got is code, f"{method}: expected {code.name}, got {got.name}: {details}"
        return details

    # shortcuts ----------------------------------------------------------------
    def create_user(self, handle: str, **fields: str) -> int:
        user = self.ok("CreateUser", murmur_pb2.CreateUserRequest(handle=handle, **fields))
        return user.user_id

    def user(self, user_id: int) -> shard_pb2.UserRecord:
        records = self.ok("GetUsers", shard_pb2.GetUsersRequest(user_ids=[user_id])).users
        assert len(records) == 1
        return records[0]

    def follow(self, follower: int, followee: int, celebrity: bool = False, version: int = 0):
        return self.ok(
            "Follow",
            shard_pb2.ShardFollowRequest(
                follower_id=follower,
                followee_id=followee,
                followee_celebrity=celebrity,
                followee_celebrity_version=version,
            ),
        )

    def post(self, author: int, text: str = "hello", request_id: str = "") -> murmur_pb2.Tweet:
        request = murmur_pb2.PostTweetRequest(user_id=author, text=text, request_id=request_id)
        return self.ok("PostTweet", request)

    def inbox(self, reader: int, before_id: int = 0, limit: int = 100):
        response = self.ok(
            "ReadInbox",
            shard_pb2.ReadInboxRequest(user_id=reader, before_id=before_id, limit=limit),
        )
        # the router merges by page_ids: they must name the page's tweets
        assert list(response.page_ids) == [t.tweet_id for t in response.page.tweets]
        return response

    def inbox_ids(self, reader: int, **kwargs: int) -> list[int]:
        return [t.tweet_id for t in self.inbox(reader, **kwargs).page.tweets]

    def stored_inbox_ids(self, reader: int) -> list[int]:
        """What the inbox itself holds (a page also merges local celebrities)."""
        entries, _ = self.state.inbox.page(reader, 0, 10_000, set(), 0)
        return [tweet_id for tweet_id, _raw in entries]

    def deliver(self, *ops: shard_pb2.DeliveryOp) -> int:
        response = self.ok("Deliver", shard_pb2.DeliverRequest(from_shard=0, ops=ops))
        return response.inbox_entries_written

    def outbox(self) -> list[tuple[int, shard_pb2.OutboxRecord]]:
        return list(self.state.outbox.peek(10_000))

    def edges(self, user_id: int, direction: int) -> list[int]:
        request = shard_pb2.ListEdgesRequest(user_id=user_id, direction=direction, limit=1000)
        return list(self.ok("ListEdges", request).user_ids)


def add_follower(followee: int, follower: int) -> shard_pb2.DeliveryOp:
    return shard_pb2.DeliveryOp(
        add_follower=shard_pb2.AddFollower(followee_id=followee, follower_id=follower)
    )


def remove_follower(followee: int, follower: int) -> shard_pb2.DeliveryOp:
    return shard_pb2.DeliveryOp(
        remove_follower=shard_pb2.RemoveFollower(followee_id=followee, follower_id=follower)
    )


def inbox_put(owners: list[int], tweet: murmur_pb2.Tweet) -> shard_pb2.DeliveryOp:
    return shard_pb2.DeliveryOp(inbox_put=shard_pb2.InboxPut(owner_ids=owners, tweet=tweet))


def follow_sync(
    followee: int,
    followers: list[int],
    celebrity: bool,
    version: int,
    tweets: list[murmur_pb2.Tweet] = (),  # type: ignore[assignment]
    complete: bool = True,
) -> shard_pb2.DeliveryOp:
    return shard_pb2.DeliveryOp(
        follow_sync=shard_pb2.FollowSync(
            followee_id=followee,
            follower_ids=followers,
            celebrity=celebrity,
            celebrity_version=version,
            tweets=tweets,
            complete=complete,
        )
    )


def followed_celebrities(page: shard_pb2.ReadInboxResponse) -> list[int]:
    """Every celebrity a reader follows: pulled by the router or merged here."""
    return [*page.celebrity_ids, *page.merged_celebrity_ids]


def ghost_in(slot: int) -> int:
    """A user id in ``slot`` that no shard has minted (from a clock an hour ahead)."""
    clock = IdClock()
    clock.restore(slot, now_ms() + 3_600_000)
    return clock.next_user_id(slot)


def handle_in(owned: Callable[[int], bool], stem: str) -> str:
    """A handle whose slot satisfies ``owned``."""
    for n in range(100_000):
        handle = f"{stem}{n}"
        if owned(slot_for_handle(handle)):
            return handle
    raise AssertionError("no handle found")


@pytest.fixture
def open_shard(tmp_path: Path) -> Iterator[Callable[..., Shard]]:
    opened: list[Shard] = []

    def factory(owners: list[int] | None = ALL_MINE, name: str = "db", **settings: int) -> Shard:
        return Shard(tmp_path / name, ShardSettings(**settings), owners, opened)

    yield factory
    for shard in opened:
        shard.close()


@pytest.fixture
def shard(open_shard: Callable[..., Shard]) -> Shard:
    return open_shard()


# users ---------------------------------------------------------------------


def test_create_user_and_lookup_by_handle(shard: Shard) -> None:
    user = shard.ok(
        "CreateUser", murmur_pb2.CreateUserRequest(handle="Alice", display_name="A", bio="b")
    )
    assert user.user_id > 0
    assert user.handle == "Alice"  # as typed
    assert (user.display_name, user.bio) == ("A", "b")
    assert slot_for_user(user.user_id) == slot_for_handle("alice")
    assert (user.follower_count, user.following_count, user.tweet_count) == (0, 0, 0)
    assert not user.celebrity
    assert abs(user.created_at.ToMilliseconds() - now_ms()) < 5_000

    for spelling in ("Alice", "alice", "ALICE", "aLiCe"):
        found = shard.ok("GetUserByHandle", shard_pb2.GetUserByHandleRequest(handle=spelling))
        assert found == user

    details = shard.fails(
        "GetUserByHandle", shard_pb2.GetUserByHandleRequest(handle="bob"), grpc.StatusCode.NOT_FOUND
    )
    assert "bob" in details


def test_duplicate_handle_ignoring_case_already_exists(shard: Shard) -> None:
    first = shard.create_user("Alice")
    for spelling in ("Alice", "alice", "ALICE"):
        details = shard.fails(
            "CreateUser",
            murmur_pb2.CreateUserRequest(handle=spelling),
            grpc.StatusCode.ALREADY_EXISTS,
        )
        assert spelling in details
    found = shard.ok("GetUserByHandle", shard_pb2.GetUserByHandleRequest(handle="alice"))
    assert found.user_id == first and found.handle == "Alice"


def test_create_user_repeated_with_its_request_id_returns_the_first_user(shard: Shard) -> None:
    ask = murmur_pb2.CreateUserRequest(handle="Alice", display_name="A", request_id="signup-1")
    first = shard.ok("CreateUser", ask)
    again = shard.ok("CreateUser", ask)  # the retry of a call whose answer was lost
    assert again == first
    respelled = murmur_pb2.CreateUserRequest(handle="ALICE", bio="b", request_id="signup-1")
    details = shard.fails("CreateUser", respelled, grpc.StatusCode.INVALID_ARGUMENT)
    assert details == (
        f"request_id 'signup-1' was used for user {first.user_id} (@Alice) with another "
        "handle and display_name and bio; a retry repeats its request unchanged"
    )
    for other in ("signup-2", ""):  # someone else asking for the same handle
        shard.fails(
            "CreateUser",
            murmur_pb2.CreateUserRequest(handle="alice", request_id=other),
            grpc.StatusCode.ALREADY_EXISTS,
        )
    shard.ok("CreateUser", murmur_pb2.CreateUserRequest(handle="bob", request_id="signup-1"))


def test_user_ids_unique_and_in_their_handle_slot(shard: Shard) -> None:
    made = [shard.create_user(f"user{n}") for n in range(10)]
    assert len(set(made)) == 10
    for n, user_id in enumerate(made):
        assert slot_for_user(user_id) == slot_for_handle(f"user{n}")


def test_get_users_omits_missing(shard: Shard) -> None:
    a, b = shard.create_user("a"), shard.create_user("b")
    missing = ghost_in(slot_for_user(a))  # owned slot, never created
    response = shard.ok("GetUsers", shard_pb2.GetUsersRequest(user_ids=[a, missing, b]))
    assert [r.user.user_id for r in response.users] == [a, b]
    empty = shard.ok("GetUsers", shard_pb2.GetUsersRequest(user_ids=[missing]))
    assert list(empty.users) == []


def test_get_users_zero_id_is_invalid(shard: Shard) -> None:
    details = shard.fails(
        "GetUsers", shard_pb2.GetUsersRequest(user_ids=[0]), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "user_id" in details


# follows -------------------------------------------------------------------


def test_follow_is_idempotent(shard: Shard) -> None:
    a, b = shard.create_user("a"), shard.create_user("b")
    before = shard.outbox()
    for _ in range(3):
        shard.follow(a, b)
    assert shard.user(a).user.following_count == 1
    after = shard.outbox()
    assert len(after) == len(before) + 1
    _, record = after[-1]
    assert record.WhichOneof("work") == "direct"
    edge = shard.state.graph.following_edge(shard.state.store.txn(), a, b)
    assert record.direct.add_follower == shard_pb2.AddFollower(
        followee_id=b, follower_id=a, followed_ms=edge.followed_ms
    )  # the follow named, so that its sync is told from an earlier follow's
    assert record.created_ms > 0
    assert shard.edges(a, shard_pb2.FOLLOWING) == [b]
    # Follow alone does not touch the far side: that is the outbox's job
    assert shard.user(b).user.follower_count == 0
    assert shard.edges(b, shard_pb2.FOLLOWERS) == []


def test_follow_self_is_invalid(shard: Shard) -> None:
    a = shard.create_user("a")
    details = shard.fails(
        "Follow",
        shard_pb2.ShardFollowRequest(follower_id=a, followee_id=a),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "yourself" in details
    assert shard.user(a).user.following_count == 0
    assert shard.outbox() == []


def test_follow_argument_errors(shard: Shard) -> None:
    a = shard.create_user("a")
    details = shard.fails(
        "Follow",
        shard_pb2.ShardFollowRequest(follower_id=a, followee_id=0),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "followee_id" in details
    details = shard.fails(
        "Follow",
        shard_pb2.ShardFollowRequest(follower_id=0, followee_id=a),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "follower_id" in details
    ghost = ghost_in(slot_for_user(a))
    details = shard.fails(
        "Follow",
        shard_pb2.ShardFollowRequest(follower_id=ghost, followee_id=a),
        grpc.StatusCode.NOT_FOUND,
    )
    assert str(ghost) in details


def test_unfollow_of_non_followed_is_noop(shard: Shard) -> None:
    a, b = shard.create_user("a"), shard.create_user("b")
    shard.ok("Unfollow", murmur_pb2.UnfollowRequest(follower_id=a, followee_id=b))
    assert shard.user(a).user.following_count == 0
    assert shard.outbox() == []


def test_unfollow_removes_edge_counter_and_inbox_copies(shard: Shard) -> None:
    a, b, c = shard.create_user("a"), shard.create_user("b"), shard.create_user("c")
    shard.follow(a, b)
    shard.follow(a, c)
    from_b = [shard.post(b, f"b{n}") for n in range(3)]
    from_c = shard.post(c, "c0")
    assert shard.deliver(*(inbox_put([a], t) for t in [*from_b, from_c])) == 4
    own = shard.post(a, "mine")
    queued = len(shard.outbox())

    shard.ok("Unfollow", murmur_pb2.UnfollowRequest(follower_id=a, followee_id=b))
    shard.ok("Unfollow", murmur_pb2.UnfollowRequest(follower_id=a, followee_id=b))

    assert shard.user(a).user.following_count == 1
    assert shard.edges(a, shard_pb2.FOLLOWING) == [c]
    assert shard.inbox_ids(a) == [own.tweet_id, from_c.tweet_id]
    outbox = shard.outbox()
    assert len(outbox) == queued + 1
    assert outbox[-1][1].direct.remove_follower == shard_pb2.RemoveFollower(
        followee_id=b, follower_id=a
    )
    # a later re-delivery of b's tweet is refused: the edge is gone
    assert shard.deliver(inbox_put([a], from_b[0])) == 0
    assert from_b[0].tweet_id not in shard.inbox_ids(a)


def test_unfollow_of_a_celebrity_clears_the_pull(shard: Shard) -> None:
    fan, star = shard.create_user("fan"), shard.create_user("star")
    shard.follow(fan, star, celebrity=True, version=2)
    assert followed_celebrities(shard.inbox(fan)) == [star]
    shard.ok("Unfollow", murmur_pb2.UnfollowRequest(follower_id=fan, followee_id=star))
    assert followed_celebrities(shard.inbox(fan)) == []
    assert shard.user(fan).user.following_count == 0


def test_read_inbox_never_returns_a_followed_celebritys_copy(open_shard) -> None:
    """Belt and braces: even if a copy by a celebrity is in the inbox (a race
    the status sync has not cleaned up yet), the page leaves it out, because
    the router pulls that celebrity's tweets itself."""
    shard = open_shard(owners=HALF)
    fan, friend = (shard.create_user(handle_in(lambda s: s < 2048, h)) for h in ("fan", "fr"))
    star = ghost_in(3000)  # on the other shard
    shard.follow(fan, friend)
    shard.follow(fan, star, celebrity=True, version=1)
    friend_tweet = shard.post(friend, "f")
    star_tweet = murmur_pb2.Tweet(tweet_id=friend_tweet.tweet_id + 1, user_id=star, text="s")
    shard.deliver(inbox_put([fan], friend_tweet))
    txn = shard.state.store.txn()
    shard.state.inbox.put(txn, fan, star_tweet)  # white-box: plant the stale copy
    txn.commit()
    page = shard.inbox(fan)
    assert [t.tweet_id for t in page.page.tweets] == [friend_tweet.tweet_id]
    assert list(page.celebrity_ids) == [star] and not page.merged_celebrity_ids


def test_read_inbox_merges_the_celebrities_it_holds(open_shard) -> None:
    """A followed celebrity on the reader's own shard is pulled in the same
    call: the page is the newest ``limit`` of inbox and celebrity tweets, and
    only celebrities on other shards are left for the router to pull."""
    shard = open_shard(owners=HALF)
    fan, friend, star = (
        shard.create_user(handle_in(lambda s: s < 2048, h)) for h in ("fan", "fr", "star")
    )
    far_star = ghost_in(3000)
    shard.follow(fan, friend)
    shard.follow(fan, star, celebrity=True, version=1)
    shard.follow(fan, far_star, celebrity=True, version=1)
    posted = []
    for n in range(3):
        posted.append(shard.post(star, f"star {n}"))
        friend_tweet = shard.post(friend, f"friend {n}")
        shard.deliver(inbox_put([fan], friend_tweet))
        posted.append(friend_tweet)
    newest = sorted((t.tweet_id for t in posted), reverse=True)
    page = shard.inbox(fan, limit=4)
    assert [t.tweet_id for t in page.page.tweets] == newest[:4]
    assert list(page.merged_celebrity_ids) == [star]
    assert list(page.celebrity_ids) == [far_star]
    older = shard.inbox(fan, before_id=newest[3], limit=4)
    assert [t.tweet_id for t in older.page.tweets] == newest[4:]


def test_read_inbox_sends_a_page_to_merge_serialized_when_asked(open_shard) -> None:
    """With ``raw_page``, a page the router must merge (the reader follows a
    celebrity elsewhere) comes as serialized tweets; a page the router hands
    on as it is still comes as ``page``."""
    shard = open_shard(owners=HALF)
    fan, loner, friend = (
        shard.create_user(handle_in(lambda s: s < 2048, h)) for h in ("fan", "lone", "fr")
    )
    shard.follow(fan, friend)
    shard.follow(loner, friend)
    shard.follow(fan, ghost_in(3000), celebrity=True, version=1)
    posted = [shard.post(friend, f"friend {n}") for n in range(3)]
    for tweet in posted:
        shard.deliver(inbox_put([fan, loner], tweet))
    newest_first = posted[::-1]

    def read(reader: int) -> shard_pb2.ReadInboxResponse:
        request = shard_pb2.ReadInboxRequest(user_id=reader, limit=10, raw_page=True)
        return shard.ok("ReadInbox", request)

    to_merge = read(fan)
    assert not to_merge.page.tweets
    assert [murmur_pb2.Tweet.FromString(raw) for raw in to_merge.page_raw] == newest_first
    assert list(to_merge.page_ids) == [t.tweet_id for t in newest_first]
    as_is = read(loner)
    assert list(as_is.page.tweets) == newest_first and not as_is.page_raw
    unasked = shard.inbox(fan)  # a router that did not ask gets messages
    assert list(unasked.page.tweets) == newest_first and not unasked.page_raw


def test_list_edges_pages(shard: Shard) -> None:
    a = shard.create_user("a")
    others = sorted(shard.create_user(f"o{n}") for n in range(5))
    for other in others:
        shard.follow(a, other)
    first = shard.ok(
        "ListEdges",
        shard_pb2.ListEdgesRequest(user_id=a, direction=shard_pb2.FOLLOWING, limit=2),
    )
    assert list(first.user_ids) == others[:2] and first.more
    rest = shard.ok(
        "ListEdges",
        shard_pb2.ListEdgesRequest(
            user_id=a, direction=shard_pb2.FOLLOWING, after_id=others[1], limit=10
        ),
    )
    assert list(rest.user_ids) == others[2:] and not rest.more
    shard.fails(
        "ListEdges", shard_pb2.ListEdgesRequest(user_id=a), grpc.StatusCode.INVALID_ARGUMENT
    )


# tweets --------------------------------------------------------------------


def test_post_tweet_idempotent_by_request_id(shard: Shard) -> None:
    a = shard.create_user("a")
    first = shard.post(a, "hi", request_id="r1")
    queued = len(shard.outbox())
    again = shard.post(a, "hi", request_id="r1")
    assert again == first
    assert len(shard.outbox()) == queued
    changed = murmur_pb2.PostTweetRequest(user_id=a, text="hi (retry)", request_id="r1")
    details = shard.fails("PostTweet", changed, grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith(f"request_id 'r1' was used for tweet {first.tweet_id} with another")
    shard.ok("EditTweet", murmur_pb2.EditTweetRequest(tweet_id=first.tweet_id, user_id=a, text="e"))
    assert shard.post(a, "hi", request_id="r1").tweet_id == first.tweet_id  # by the first text
    assert shard.user(a).user.tweet_count == 1
    assert shard.inbox_ids(a) == [first.tweet_id]

    other = shard.post(a, "second", request_id="r2")
    assert other.tweet_id > first.tweet_id
    blank1, blank2 = shard.post(a, "x"), shard.post(a, "x")  # no request_id: no dedupe
    assert len({first.tweet_id, other.tweet_id, blank1.tweet_id, blank2.tweet_id}) == 4
    assert shard.user(a).user.tweet_count == 4


def test_a_request_id_kept_before_its_text_digest_still_dedupes(shard: Shard) -> None:
    """Records from before the digest hold the tweet id alone: a retry
    with any text returns that tweet, as it always did."""
    a = shard.create_user("a")
    first = shard.post(a, "hi", request_id="old")
    key = keys.request(slot_for_user(a), a, "old")
    shard.state.store.db.put(key, keys.u64(first.tweet_id))
    assert shard.post(a, "other", request_id="old").tweet_id == first.tweet_id
    assert shard.user(a).user.tweet_count == 1


def test_request_ids_are_per_author(shard: Shard) -> None:
    a, b = shard.create_user("a"), shard.create_user("b")
    ta = shard.post(a, "from a", request_id="same")
    tb = shard.post(b, "from b", request_id="same")
    assert ta.tweet_id != tb.tweet_id and tb.user_id == b


def test_post_tweet_fields_outbox_and_own_inbox(shard: Shard) -> None:
    a = shard.create_user("a")
    tweet = shard.post(a, "hello world")
    assert tweet.user_id == a and tweet.text == "hello world"
    assert slot_of_tweet(tweet.tweet_id) == slot_for_user(a)
    assert abs(tweet.created_at.ToMilliseconds() - now_ms()) < 5_000
    assert not tweet.HasField("edited_at")
    [(_, record)] = shard.outbox()
    assert record.tweet_fanout.kind == shard_pb2.FANOUT_PUT
    assert record.tweet_fanout.tweet == tweet
    page = shard.inbox(a)
    assert list(page.page.tweets) == [tweet]
    got = shard.ok("GetTweets", shard_pb2.GetTweetsRequest(tweet_ids=[tweet.tweet_id]))
    assert list(got.tweets) == [tweet]


def test_post_by_unknown_user_is_not_found(shard: Shard) -> None:
    a = shard.create_user("a")
    ghost = ghost_in(slot_for_user(a))
    shard.fails(
        "PostTweet", murmur_pb2.PostTweetRequest(user_id=ghost, text="x"), grpc.StatusCode.NOT_FOUND
    )
    assert shard.outbox() == []


def test_edit_and_delete_by_non_author_denied(shard: Shard) -> None:
    a, b = shard.create_user("a"), shard.create_user("b")
    tweet = shard.post(a, "original")
    queued = len(shard.outbox())
    details = shard.fails(
        "EditTweet",
        murmur_pb2.EditTweetRequest(tweet_id=tweet.tweet_id, user_id=b, text="hacked"),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert str(b) in details and str(tweet.tweet_id) in details
    shard.fails(
        "DeleteTweet",
        murmur_pb2.DeleteTweetRequest(tweet_id=tweet.tweet_id, user_id=b),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    got = shard.ok("GetTweets", shard_pb2.GetTweetsRequest(tweet_ids=[tweet.tweet_id]))
    assert list(got.tweets) == [tweet]
    assert shard.user(a).user.tweet_count == 1
    assert len(shard.outbox()) == queued


def test_edit_by_author_updates_tweet_and_own_inbox(shard: Shard) -> None:
    a = shard.create_user("a")
    tweet = shard.post(a, "typo")
    edited = shard.ok(
        "EditTweet", murmur_pb2.EditTweetRequest(tweet_id=tweet.tweet_id, user_id=a, text="fixed")
    )
    assert edited.tweet_id == tweet.tweet_id and edited.text == "fixed"
    assert edited.HasField("edited_at") and edited.created_at == tweet.created_at
    got = shard.ok("GetTweets", shard_pb2.GetTweetsRequest(tweet_ids=[tweet.tweet_id]))
    assert list(got.tweets) == [edited]
    assert [t.text for t in shard.inbox(a).page.tweets] == ["fixed"]
    _, record = shard.outbox()[-1]
    assert record.tweet_fanout.kind == shard_pb2.FANOUT_EDIT
    assert record.tweet_fanout.tweet.text == "fixed"


def test_delete_decrements_and_removes(shard: Shard) -> None:
    a = shard.create_user("a")
    keep, gone = shard.post(a, "keep"), shard.post(a, "gone", request_id="rq")
    assert shard.user(a).user.tweet_count == 2
    shard.ok("DeleteTweet", murmur_pb2.DeleteTweetRequest(tweet_id=gone.tweet_id, user_id=a))
    assert shard.user(a).user.tweet_count == 1
    got = shard.ok(
        "GetTweets", shard_pb2.GetTweetsRequest(tweet_ids=[keep.tweet_id, gone.tweet_id])
    )
    assert [t.tweet_id for t in got.tweets] == [keep.tweet_id]
    assert shard.inbox_ids(a) == [keep.tweet_id]
    pulled = shard.ok("PullTimelines", shard_pb2.PullTimelinesRequest(author_ids=[a]))
    assert [t.tweet_id for t in pulled.tweets] == [keep.tweet_id]
    _, record = shard.outbox()[-1]
    assert record.tweet_fanout.kind == shard_pb2.FANOUT_DELETE
    assert record.tweet_fanout.tweet.tweet_id == gone.tweet_id
    # deleting again: NOT_FOUND, and the counter does not move
    shard.fails(
        "DeleteTweet",
        murmur_pb2.DeleteTweetRequest(tweet_id=gone.tweet_id, user_id=a),
        grpc.StatusCode.NOT_FOUND,
    )
    assert shard.user(a).user.tweet_count == 1
    # a retry of the deleted post does not resurrect it
    _, _, code, _ = shard.call(
        "PostTweet", murmur_pb2.PostTweetRequest(user_id=a, text="gone", request_id="rq")
    )
    assert code is grpc.StatusCode.NOT_FOUND
    assert shard.user(a).user.tweet_count == 1


# timelines -----------------------------------------------------------------


def test_pull_timelines_merges_newest_first(shard: Shard) -> None:
    authors = [shard.create_user(f"au{n}") for n in range(3)]
    posted = [shard.post(authors[n % 3], f"t{n}").tweet_id for n in range(12)]
    newest_first = sorted(posted, reverse=True)

    def pull(**fields: Any) -> list[int]:
        request = shard_pb2.PullTimelinesRequest(author_ids=authors, **fields)
        return [t.tweet_id for t in shard.ok("PullTimelines", request).tweets]

    assert pull(limit=100) == newest_first
    assert pull(limit=4) == newest_first[:4]
    middle = newest_first[5]
    assert pull(before_id=middle, limit=100) == newest_first[6:]
    assert pull(before_id=middle, limit=3) == newest_first[6:9]
    assert pull(before_id=min(posted), limit=100) == []
    # duplicated authors do not duplicate tweets; a subset only shows its own
    request = shard_pb2.PullTimelinesRequest(author_ids=[authors[1], authors[1]], limit=100)
    got = [t.tweet_id for t in shard.ok("PullTimelines", request).tweets]
    assert got == [i for i in newest_first if i in posted[1::3]]


def test_pull_timelines_require_authors(shard: Shard) -> None:
    a = shard.create_user("a")
    ghost = ghost_in(slot_for_user(a))
    loose = shard.ok("PullTimelines", shard_pb2.PullTimelinesRequest(author_ids=[a, ghost]))
    assert list(loose.tweets) == []
    shard.fails(
        "PullTimelines",
        shard_pb2.PullTimelinesRequest(author_ids=[a, ghost], require_authors=True),
        grpc.StatusCode.NOT_FOUND,
    )


def test_read_inbox_respects_before_id_and_limit(shard: Shard) -> None:
    a = shard.create_user("a")
    posted = [shard.post(a, f"t{n}").tweet_id for n in range(6)]
    newest_first = posted[::-1]
    assert shard.inbox_ids(a) == newest_first
    assert shard.inbox_ids(a, limit=2) == newest_first[:2]
    assert shard.inbox_ids(a, before_id=posted[3]) == [posted[2], posted[1], posted[0]]
    assert shard.inbox_ids(a, before_id=posted[3], limit=1) == [posted[2]]
    assert shard.inbox_ids(a, before_id=posted[0]) == []
    page = shard.inbox(a)
    assert page.exact_from == 0 and not page.needs_pull_below
    assert followed_celebrities(page) == [] and list(page.pull_below_ids) == []


# slot ownership ------------------------------------------------------------


def test_wrong_slot_is_failed_precondition_with_metadata(open_shard) -> None:
    shard = open_shard(owners=HALF)
    mine = handle_in(lambda s: s < SLOT_COUNT // 2, "mine")
    theirs = handle_in(lambda s: s >= SLOT_COUNT // 2, "theirs")
    assert shard.create_user(mine)

    def assert_wrong_slot(method: str, request: Any, slot: int) -> None:
        _, trailing, code, details = shard.call(method, request)
        assert code is grpc.StatusCode.FAILED_PRECONDITION, (method, code, details)
        assert trailing.get(WRONG_SLOT_METADATA) == str(slot), (method, trailing)
        assert f"slot {slot}" in details

    slot = slot_for_handle(theirs)
    assert_wrong_slot("CreateUser", murmur_pb2.CreateUserRequest(handle=theirs), slot)
    assert_wrong_slot("GetUserByHandle", shard_pb2.GetUserByHandleRequest(handle=theirs), slot)

    foreign_slot = 3000
    foreign_user = ghost_in(foreign_slot)
    foreign_tweet = compose_tweet_id(now_ms(), foreign_slot, 0)
    for method, request in [
        ("GetUsers", shard_pb2.GetUsersRequest(user_ids=[foreign_user])),
        ("Follow", shard_pb2.ShardFollowRequest(follower_id=foreign_user, followee_id=7)),
        ("Unfollow", murmur_pb2.UnfollowRequest(follower_id=foreign_user, followee_id=7)),
        ("PostTweet", murmur_pb2.PostTweetRequest(user_id=foreign_user, text="x")),
        ("GetTweets", shard_pb2.GetTweetsRequest(tweet_ids=[foreign_tweet])),
        ("EditTweet", murmur_pb2.EditTweetRequest(tweet_id=foreign_tweet, user_id=1, text="x")),
        ("DeleteTweet", murmur_pb2.DeleteTweetRequest(tweet_id=foreign_tweet, user_id=1)),
        ("ReadInbox", shard_pb2.ReadInboxRequest(user_id=foreign_user)),
        ("PullTimelines", shard_pb2.PullTimelinesRequest(author_ids=[foreign_user])),
        ("ListEdges", shard_pb2.ListEdgesRequest(user_id=foreign_user, direction=1)),
        ("Deliver", shard_pb2.DeliverRequest(ops=[add_follower(foreign_user, 5)])),
    ]:
        assert_wrong_slot(method, request, foreign_slot)
    assert shard.outbox() == []


def test_deliver_checks_every_op_before_applying_any(open_shard) -> None:
    shard = open_shard(owners=HALF)
    local = shard.create_user(handle_in(lambda s: s < SLOT_COUNT // 2, "loc"))
    foreign = ghost_in(4000)
    _, trailing, code, _ = shard.call(
        "Deliver",
        shard_pb2.DeliverRequest(ops=[add_follower(local, 5), add_follower(foreign, 5)]),
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert trailing.get(WRONG_SLOT_METADATA) == "4000"
    assert shard.user(local).user.follower_count == 0  # nothing half-applied


def test_unassigned_shard_is_unavailable(open_shard) -> None:
    shard = open_shard(owners=None)
    details = shard.fails(
        "CreateUser", murmur_pb2.CreateUserRequest(handle="a"), grpc.StatusCode.UNAVAILABLE
    )
    assert "shard 0" in details
    info = shard.ok("GetShardInfo", shard_pb2.GetShardInfoRequest())
    assert info.map_version == 0 and list(info.owned) == []
    assert shard.ok("Ping", murmur_pb2.PingRequest()).shard_id == 0


def test_assign_slots_only_by_bootstrap(open_shard) -> None:
    shard = open_shard(owners=None)
    slot_map = shard_pb2.SlotMap(version=1, addresses={0: "a:1", 1: "b:1"}, owners=HALF)
    info = shard.ok("AssignSlots", shard_pb2.AssignSlotsRequest(slot_map=slot_map))
    assert [(r.start, r.end) for r in info.owned] == [(0, SLOT_COUNT // 2 - 1)]
    # the same map again is fine; a different map under the same version is refused
    shard.ok("AssignSlots", shard_pb2.AssignSlotsRequest(slot_map=slot_map))
    other = shard_pb2.SlotMap(version=1, addresses={0: "a:1"}, owners=ALL_MINE)
    shard.fails(
        "AssignSlots",
        shard_pb2.AssignSlotsRequest(slot_map=other),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    info = shard.ok("GetShardInfo", shard_pb2.GetShardInfoRequest())
    assert info.map_version == 1 and list(info.slot_map.owners) == HALF
    short = shard_pb2.SlotMap(version=3, owners=[0] * 10)
    details = shard.fails(
        "AssignSlots",
        shard_pb2.AssignSlotsRequest(slot_map=short),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "owners" in details


# delivery ------------------------------------------------------------------


def test_add_follower_idempotent(shard: Shard) -> None:
    a, b = shard.create_user("a"), shard.create_user("b")
    for _ in range(2):
        assert shard.deliver(add_follower(b, a)) == 0
    assert shard.user(b).user.follower_count == 1
    assert shard.edges(b, shard_pb2.FOLLOWERS) == [a]
    syncs = [r.status_sync for _, r in shard.outbox() if r.HasField("status_sync")]
    # exactly one status sync (celebrity status + backfill) for the new follower
    assert syncs == [shard_pb2.StatusSync(followee_id=b, follower_id=a)]


def test_add_follower_twice_in_one_delivery(shard: Shard) -> None:
    b = shard.create_user("b")
    shard.deliver(add_follower(b, 11), add_follower(b, 11), add_follower(b, 12))
    assert shard.user(b).user.follower_count == 2


def test_add_follower_for_unknown_user_is_dropped(shard: Shard) -> None:
    a = shard.create_user("a")
    ghost = ghost_in(slot_for_user(a))
    shard.deliver(add_follower(ghost, a))
    assert shard.outbox() == []
    shard.deliver(remove_follower(ghost, a))


def test_remove_follower_idempotent(shard: Shard) -> None:
    b = shard.create_user("b")
    shard.deliver(add_follower(b, 11), add_follower(b, 12))
    shard.deliver(remove_follower(b, 11), remove_follower(b, 11))
    shard.deliver(remove_follower(b, 99))  # never followed
    assert shard.user(b).user.follower_count == 1
    assert shard.edges(b, shard_pb2.FOLLOWERS) == [12]


def test_inbox_put_only_reaches_real_ordinary_followers(shard: Shard) -> None:
    author = shard.create_user("author")
    fan, stranger, celeb_fan = (shard.create_user(h) for h in ("fan", "stranger", "celebfan"))
    shard.follow(fan, author)
    shard.follow(celeb_fan, author, celebrity=True, version=1)
    tweet = shard.post(author, "news")

    owners = [fan, stranger, celeb_fan]
    assert shard.deliver(inbox_put(owners, tweet)) == 1
    assert shard.inbox_ids(fan) == [tweet.tweet_id]
    assert shard.inbox_ids(stranger) == []
    assert shard.stored_inbox_ids(celeb_fan) == []
    assert followed_celebrities(shard.inbox(celeb_fan)) == [author]
    # re-delivery after a crash: nothing new, still one copy
    assert shard.deliver(inbox_put(owners, tweet)) == 0
    assert shard.inbox_ids(fan) == [tweet.tweet_id]


def test_inbox_edit_and_delete(shard: Shard) -> None:
    author, fan, other = (shard.create_user(h) for h in ("author", "fan", "other"))
    shard.follow(fan, author)
    shard.follow(other, author)
    keep, gone = shard.post(author, "keep"), shard.post(author, "gone")
    shard.deliver(inbox_put([fan], keep), inbox_put([fan, other], gone))

    edited = murmur_pb2.Tweet()
    edited.CopyFrom(keep)
    edited.text = "kept, edited"
    shard.deliver(
        shard_pb2.DeliveryOp(inbox_edit=shard_pb2.InboxEdit(owner_ids=[fan, other], tweet=edited))
    )
    assert [t.text for t in shard.inbox(fan).page.tweets] == ["gone", "kept, edited"]
    assert shard.inbox_ids(other) == [gone.tweet_id]  # edit never inserts

    delete = shard_pb2.DeliveryOp(
        inbox_delete=shard_pb2.InboxDelete(owner_ids=[fan, other], tweet_id=gone.tweet_id)
    )
    shard.deliver(delete)
    shard.deliver(delete)  # idempotent
    assert shard.inbox_ids(fan) == [keep.tweet_id]
    assert shard.inbox_ids(other) == []


def test_follow_sync_celebrity_marks_and_removes_entries(shard: Shard) -> None:
    star, fan, friend = (shard.create_user(h) for h in ("star", "fan", "friend"))
    shard.follow(fan, star)
    shard.follow(fan, friend)
    star_tweets = [shard.post(star, f"s{n}") for n in range(3)]
    friend_tweet = shard.post(friend, "f")
    shard.deliver(*(inbox_put([fan], t) for t in [*star_tweets, friend_tweet]))
    assert len(shard.inbox_ids(fan)) == 4

    # promotion (version 1): marker set, the star's copies leave the inbox
    assert shard.deliver(follow_sync(star, [fan], celebrity=True, version=1)) == 0
    page = shard.inbox(fan)
    assert followed_celebrities(page) == [star]
    assert shard.stored_inbox_ids(fan) == [friend_tweet.tweet_id]
    # the star's tweets stay out, however often they are re-delivered
    assert shard.deliver(inbox_put([fan], star_tweets[0])) == 0
    assert shard.stored_inbox_ids(fan) == [friend_tweet.tweet_id]

    # a stale (older) status change is ignored
    stale = follow_sync(star, [fan], celebrity=False, version=0, tweets=star_tweets[::-1])
    assert shard.deliver(stale) == 0
    page = shard.inbox(fan)
    assert followed_celebrities(page) == [star]
    assert shard.stored_inbox_ids(fan) == [friend_tweet.tweet_id]

    # demotion (version 2) without backfill: the copies were really deleted,
    # not merely hidden behind the marker
    assert shard.deliver(follow_sync(star, [fan], celebrity=False, version=2)) == 0
    page = shard.inbox(fan)
    assert followed_celebrities(page) == []
    assert [t.tweet_id for t in page.page.tweets] == [friend_tweet.tweet_id]

    # promoted again (3), then demoted (4) with a backfill of recent tweets
    shard.deliver(follow_sync(star, [fan], celebrity=True, version=3))
    newer = follow_sync(star, [fan], celebrity=False, version=4, tweets=star_tweets[::-1])
    assert shard.deliver(newer) == 3
    page = shard.inbox(fan)
    assert followed_celebrities(page) == []
    expected = sorted([t.tweet_id for t in star_tweets] + [friend_tweet.tweet_id], reverse=True)
    assert [t.tweet_id for t in page.page.tweets] == expected
    # a late copy of the version-3 promotion changes nothing
    shard.deliver(follow_sync(star, [fan], celebrity=True, version=3))
    assert followed_celebrities(shard.inbox(fan)) == []
    assert shard.inbox_ids(fan) == expected


def test_follow_sync_for_non_follower_is_ignored(shard: Shard) -> None:
    star, stranger = shard.create_user("star"), shard.create_user("stranger")
    tweet = shard.post(star, "x")
    shard.deliver(follow_sync(star, [stranger], celebrity=False, version=0, tweets=[tweet]))
    assert shard.inbox_ids(stranger) == []
    shard.deliver(follow_sync(star, [stranger], celebrity=True, version=1))
    assert followed_celebrities(shard.inbox(stranger)) == []


def test_follow_sync_short_backfill_raises_exact_from(shard: Shard) -> None:
    author, fan = shard.create_user("author"), shard.create_user("fan")
    shard.follow(fan, author)
    tweets = [shard.post(author, f"t{n}") for n in range(4)][::-1]  # newest first
    shard.deliver(follow_sync(author, [fan], False, 0, tweets=tweets[:2], complete=False))
    page = shard.inbox(fan)
    assert [t.tweet_id for t in page.page.tweets] == [t.tweet_id for t in tweets[:2]]
    assert page.exact_from == tweets[1].tweet_id
    assert page.needs_pull_below
    assert list(page.pull_below_ids) == [fan, author]


def test_a_backfill_past_the_cap_trims_the_inbox(open_shard) -> None:
    shard = open_shard(inbox_cap=5)
    author, fan = shard.create_user("author"), shard.create_user("fan")
    shard.follow(fan, author)
    tweets = [shard.post(author, f"t{n}") for n in range(8)][::-1]  # newest first
    assert shard.deliver(follow_sync(author, [fan], False, 0, tweets=tweets)) == 8
    assert shard.inbox_ids(fan) == [t.tweet_id for t in tweets[:5]]
    assert tweets[5].tweet_id < shard.inbox(fan).exact_from <= tweets[4].tweet_id


def test_deliver_op_of_unknown_kind_is_invalid_argument(shard: Shard) -> None:
    b = shard.create_user("b")
    newer_kind = shard_pb2.DeliveryOp.FromString(bytes([0x98, 0x06, 0x01]))  # field 99
    assert newer_kind.WhichOneof("op") is None
    for op in (shard_pb2.DeliveryOp(), newer_kind):
        _, _, code, details = shard.call(
            "Deliver", shard_pb2.DeliverRequest(ops=[add_follower(b, 11), op])
        )
        assert shard.user(b).user.follower_count == 0  # nothing half-applied
        assert code is grpc.StatusCode.INVALID_ARGUMENT, f"{code.name}: {details}"


# inbox cap -----------------------------------------------------------------


def test_inbox_cap_trims_oldest_and_asks_for_pull_below(open_shard) -> None:
    shard = open_shard(inbox_cap=5)
    author, friend, star, reader = (
        shard.create_user(h) for h in ("author", "friend", "star", "reader")
    )
    shard.follow(reader, author)
    shard.follow(reader, friend)
    shard.follow(reader, star, celebrity=True, version=1)
    tweets = [shard.post(author, f"t{n}") for n in range(8)]
    ids = [t.tweet_id for t in tweets]

    written = shard.deliver(*(inbox_put([reader], t) for t in tweets))
    assert written == 8

    size = 0  # inboxes are cut back to the cap once they pass trim_threshold(cap)
    for _ in tweets:
        size += 1
        if size > trim_threshold(5):
            size = 5
    kept = sorted(ids, reverse=True)[:size]
    trimmed = sorted(ids)[: len(ids) - size]
    page = shard.inbox(reader, limit=20)
    assert [t.tweet_id for t in page.page.tweets] == kept
    # every home tweet at or above exact_from is present; trimmed ones are below
    assert max(trimmed) < page.exact_from <= min(kept)
    assert page.needs_pull_below
    assert page.pull_below_ids[0] == reader
    assert sorted(page.pull_below_ids[1:]) == sorted([author, friend])  # not the celebrity
    assert followed_celebrities(page) == [star]

    # a page that fills up above exact_from needs no pull
    top = shard.inbox(reader, limit=3)
    assert [t.tweet_id for t in top.page.tweets] == kept[:3] and not top.needs_pull_below
    # reading beyond the watermark returns nothing from the inbox but says so
    beyond = shard.inbox(reader, before_id=min(kept), limit=20)
    assert list(beyond.page.tweets) == [] and beyond.needs_pull_below
    # the author's own inbox is capped too (PostTweet trims)
    assert shard.inbox_ids(author, limit=20) == kept

    # re-delivering a trimmed tweet stores it only until the next trim, which
    # this put triggers (6 held + 1 > trim_threshold(5)): back to the newest 5
    shard.deliver(inbox_put([reader], tweets[0]))
    assert shard.inbox_ids(reader, limit=20) == kept[:5]


def test_inbox_cap_property_over_many_puts(open_shard) -> None:
    shard = open_shard(inbox_cap=5)
    author, reader = shard.create_user("author"), shard.create_user("reader")
    shard.follow(reader, author)
    seen: list[int] = []
    held = 0  # entries held: back to the cap once past trim_threshold(cap)
    for n in range(12):
        tweet = shard.post(author, f"t{n}")
        shard.deliver(inbox_put([reader], tweet))
        seen.append(tweet.tweet_id)
        held += 1
        if held > trim_threshold(5):
            held = 5
        page = shard.inbox(reader, limit=50)
        got = [t.tweet_id for t in page.page.tweets]
        assert got == sorted(seen, reverse=True)[:held]
        assert len(got) <= trim_threshold(5)
        if len(seen) > held:
            assert sorted(seen)[-held - 1] < page.exact_from <= min(got)


# celebrity hysteresis ------------------------------------------------------


def test_celebrity_promotion_and_demotion_with_hysteresis(open_shard) -> None:
    shard = open_shard(celebrity_threshold=3)
    star = shard.create_user("star")

    def status() -> tuple[bool, int, int]:
        record = shard.user(star)
        return record.user.celebrity, record.celebrity_version, record.user.follower_count

    def broadcasts() -> int:  # status syncs to every follower (follower_id 0)
        return sum(
            1
            for _, r in shard.outbox()
            if r.HasField("status_sync")
            and r.status_sync.followee_id == star
            and r.status_sync.follower_id == 0
        )

    shard.deliver(add_follower(star, 101), add_follower(star, 102))
    assert status() == (False, 0, 2) and broadcasts() == 0
    shard.deliver(add_follower(star, 103))
    assert status() == (True, 1, 3) and broadcasts() == 1
    shard.deliver(add_follower(star, 103))  # re-delivered: no change
    assert status() == (True, 1, 3) and broadcasts() == 1

    # demotion line is 3 - max(1, 3 // 10) = 2
    shard.deliver(remove_follower(star, 101))
    assert status() == (True, 1, 2) and broadcasts() == 1
    shard.deliver(remove_follower(star, 102))
    assert status() == (False, 2, 1) and broadcasts() == 2
    shard.deliver(add_follower(star, 104))  # 2 < 3: not promoted again
    assert status() == (False, 2, 2)
    shard.deliver(add_follower(star, 105))
    assert status() == (True, 3, 3) and broadcasts() == 3


def test_celebrity_posts_skip_fanout_but_reach_own_inbox(open_shard) -> None:
    shard = open_shard(celebrity_threshold=1)
    star = shard.create_user("star")
    shard.deliver(add_follower(star, 101))
    assert shard.user(star).user.celebrity
    queued = len(shard.outbox())
    tweet = shard.post(star, "to the masses")
    assert len(shard.outbox()) == queued  # fan-out on read
    assert shard.inbox_ids(star) == [tweet.tweet_id]
    edited = shard.ok(
        "EditTweet", murmur_pb2.EditTweetRequest(tweet_id=tweet.tweet_id, user_id=star, text="e")
    )
    assert edited.text == "e" and len(shard.outbox()) == queued


# durability ----------------------------------------------------------------


def test_everything_acknowledged_survives_reopen(open_shard) -> None:
    shard = open_shard(inbox_cap=50)
    a, b, c = shard.create_user("Alice"), shard.create_user("bob"), shard.create_user("carol")
    shard.follow(a, b)
    shard.follow(a, c, celebrity=True, version=4)
    shard.deliver(add_follower(b, a))
    first = shard.post(b, "first", request_id="req-1")
    shard.deliver(inbox_put([a], first))
    # push b's slot clock a minute ahead: only the persisted floor can keep
    # ids increasing after the restart
    future = now_ms() + 60_000
    shard.state.clock.restore(slot_for_user(b), future)
    ahead = shard.post(b, "from the future")
    assert ahead.tweet_id >= lowest_id_at(future + 1)
    deleted = shard.post(b, "deleted")
    shard.ok("DeleteTweet", murmur_pb2.DeleteTweetRequest(tweet_id=deleted.tweet_id, user_id=b))

    users_before = {u: shard.user(u) for u in (a, b, c)}
    inbox_before = shard.inbox(a)
    outbox_before = shard.outbox()
    assert len(outbox_before) >= 6
    last_seq = outbox_before[-1][0]

    shard = shard.reopen()

    assert {u: shard.user(u) for u in (a, b, c)} == users_before
    assert shard.user(b).user.tweet_count == 2 and shard.user(b).user.follower_count == 1
    assert (
        shard.ok("GetUserByHandle", shard_pb2.GetUserByHandleRequest(handle="ALICE")).user_id == a
    )
    assert shard.edges(a, shard_pb2.FOLLOWING) == sorted([b, c])
    assert shard.edges(b, shard_pb2.FOLLOWERS) == [a]
    assert shard.inbox(a) == inbox_before
    assert followed_celebrities(shard.inbox(a)) == [c]
    got = shard.ok(
        "GetTweets",
        shard_pb2.GetTweetsRequest(tweet_ids=[first.tweet_id, ahead.tweet_id, deleted.tweet_id]),
    )
    assert list(got.tweets) == [first, ahead]
    assert shard.outbox() == outbox_before  # undelivered fan-out is not lost
    info = shard.ok("GetShardInfo", shard_pb2.GetShardInfoRequest())
    assert info.map_version == 1 and [(r.start, r.end) for r in info.owned] == [(0, 4095)]

    # request ids persisted: a retry returns the original
    assert shard.post(b, "first", request_id="req-1") == first
    assert shard.user(b).user.tweet_count == 2
    # the id clock never goes back: new ids beat the pre-restart ones
    fresh = shard.post(b, "after restart")
    assert fresh.tweet_id > ahead.tweet_id
    new_user = shard.create_user("dave")
    assert slot_for_user(new_user) == slot_for_handle("dave")
    # new outbox records append after the old ones instead of overwriting them
    outbox_after = shard.outbox()
    assert outbox_after[: len(outbox_before)] == outbox_before
    assert len(outbox_after) == len(outbox_before) + 1
    assert outbox_after[-1][0] > last_seq
    assert outbox_after[-1][1].tweet_fanout.tweet == fresh


def test_user_clock_floor_survives_reopen(open_shard) -> None:
    shard = open_shard()
    handle = "early"
    slot = slot_for_handle(handle)
    future = now_ms() + 60_000
    shard.state.clock.restore(slot, future)
    early = shard.create_user(handle)
    assert early >= lowest_id_at(future + 1)
    shard = shard.reopen()
    later_handle = handle_in(lambda s: s == slot, "late")
    later = shard.create_user(later_handle)
    assert later > early


def test_reopen_with_another_shard_id_is_refused(open_shard, tmp_path: Path) -> None:
    shard = open_shard(name="owned")
    shard.close()
    with pytest.raises(SystemExit, match="shard 0"):
        ShardState.open(str(tmp_path / "owned"), shard_id=3, settings=ShardSettings())


# coalesced batches and runtime settings ------------------------------------


def shard_call(method: str, request: Any) -> shard_pb2.ShardCall:
    return shard_pb2.ShardCall(method=method, request=request.SerializeToString())


def test_execute_runs_each_call_with_its_own_status(open_shard) -> None:
    shard = open_shard(owners=HALF)
    a = shard.create_user(handle_in(lambda s: s < SLOT_COUNT // 2, "a"))
    b = shard.create_user(handle_in(lambda s: s < SLOT_COUNT // 2, "b"))
    foreign = ghost_in(3000)
    calls = [
        shard_call("PostTweet", murmur_pb2.PostTweetRequest(user_id=a, text="1")),
        shard_call("PostTweet", murmur_pb2.PostTweetRequest(user_id=a, text="2")),
        shard_call("PostTweet", murmur_pb2.PostTweetRequest(user_id=a, text="3", request_id="x")),
        shard_call("PostTweet", murmur_pb2.PostTweetRequest(user_id=a, text="3", request_id="x")),
        shard_call("Follow", shard_pb2.ShardFollowRequest(follower_id=a, followee_id=b)),
        shard_call("Follow", shard_pb2.ShardFollowRequest(follower_id=a, followee_id=b)),
        shard_call("Follow", shard_pb2.ShardFollowRequest(follower_id=b, followee_id=b)),
        shard_call("GetUsers", shard_pb2.GetUsersRequest(user_ids=[foreign])),
        shard_call("Execute", shard_pb2.ExecuteRequest()),
        shard_pb2.ShardCall(method="PostTweet", request=b"\xff\xff\xff"),
    ]
    results = shard.ok("Execute", shard_pb2.ExecuteRequest(calls=calls)).results
    codes = [grpc.StatusCode.OK.value[0]] * 6 + [
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.FAILED_PRECONDITION.value[0],
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
    ]
    assert [r.code for r in results] == codes, [(r.code, r.message) for r in results]
    assert [r.wrong_slot for r in results] == [False] * 7 + [True, False, False]
    assert "yourself" in results[6].message
    tweets = [murmur_pb2.Tweet.FromString(r.response) for r in results[:4]]
    assert tweets[2] == tweets[3]  # same request_id inside one batch: one tweet
    assert len({t.tweet_id for t in tweets}) == 3
    record = shard.user(a)
    assert record.user.tweet_count == 3  # exact under concurrency
    assert record.user.following_count == 1


def test_execute_answers_reads_and_writes_in_request_order(shard: Shard) -> None:
    """Reads run in place and writes as tasks; answers keep the calls' order."""
    a = shard.create_user("a")
    calls = [
        shard_call("Ping", murmur_pb2.PingRequest()),
        shard_call("PostTweet", murmur_pb2.PostTweetRequest(user_id=a, text="first")),
        shard_call("GetUsers", shard_pb2.GetUsersRequest(user_ids=[a])),
        shard_call("PostTweet", murmur_pb2.PostTweetRequest(user_id=a, text="second")),
        shard_call("ReadInbox", shard_pb2.ReadInboxRequest(user_id=a, limit=5)),
    ]
    results = shard.ok("Execute", shard_pb2.ExecuteRequest(calls=calls)).results
    assert [r.code for r in results] == [grpc.StatusCode.OK.value[0]] * 5
    assert murmur_pb2.PingResponse.FromString(results[0].response).shard_id == shard.state.shard_id
    assert murmur_pb2.Tweet.FromString(results[1].response).text == "first"
    users = shard_pb2.GetUsersResponse.FromString(results[2].response).users
    assert [u.user.user_id for u in users] == [a]
    assert murmur_pb2.Tweet.FromString(results[3].response).text == "second"
    shard_pb2.ReadInboxResponse.FromString(results[4].response)  # parses as its own type
    assert shard.user(a).user.tweet_count == 2


def test_update_settings_reevaluates_celebrities_and_persists(open_shard) -> None:
    shard = open_shard()
    star, small = shard.create_user("star"), shard.create_user("small")
    shard.deliver(add_follower(star, 11), add_follower(star, 12), add_follower(small, 13))
    assert not shard.user(star).user.celebrity
    queued = len(shard.outbox())

    update = shard_pb2.UpdateSettingsRequest(celebrity_threshold=2)
    settings = shard.ok("UpdateSettings", update)
    assert settings.celebrity_threshold == 2
    assert settings.inbox_cap == ShardSettings().inbox_cap  # unset fields unchanged
    star_record = shard.user(star)
    assert star_record.user.celebrity and star_record.celebrity_version == 1
    assert not shard.user(small).user.celebrity
    broadcasts = [r.status_sync for _, r in shard.outbox()[queued:] if r.HasField("status_sync")]
    assert broadcasts == [shard_pb2.StatusSync(followee_id=star)]

    details = shard.fails(
        "UpdateSettings",
        shard_pb2.UpdateSettingsRequest(inbox_cap=0),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "inbox_cap" in details

    shard = shard.reopen()
    got = shard.ok("GetSettings", shard_pb2.GetSettingsRequest())
    assert got.celebrity_threshold == 2
    assert shard.user(star).user.celebrity


def test_execute_refuses_a_streaming_method_alone(shard: Shard, tmp_path: Path) -> None:
    a = shard.create_user("a")
    calls = [
        shard_call("PostTweet", murmur_pb2.PostTweetRequest(user_id=a, text="x", request_id="k")),
        shard_call("Backup", shard_pb2.BackupRequest(path=str(tmp_path / "backup-in-batch"))),
    ]
    response, _, code, details = shard.call("Execute", shard_pb2.ExecuteRequest(calls=calls))
    # the PostTweet was applied either way; the caller must be told so
    assert shard.user(a).user.tweet_count == 1
    assert code is OK, f"{code.name}: {details}"
    assert response.results[0].code == grpc.StatusCode.OK.value[0]
    assert response.results[1].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


# backup (a server-streaming call through the adapter) ------------------------


def test_backup_streams_progress_and_is_a_consistent_copy(open_shard, tmp_path: Path) -> None:
    shard = open_shard()
    a, b = shard.create_user("a"), shard.create_user("b")
    shard.follow(a, b)
    tweet = shard.post(b, "backed up")
    target = tmp_path / "backup"

    statuses, code, details = shard.call_stream("Backup", shard_pb2.BackupRequest(path=str(target)))
    assert code is OK, details
    assert statuses and statuses[-1].done and statuses[-1].path == str(target)
    assert statuses[-1].keys_copied > 0
    shard.post(b, "after the backup")

    _, code, details = shard.call_stream("Backup", shard_pb2.BackupRequest(path=str(target)))
    assert code is grpc.StatusCode.ALREADY_EXISTS, details
    _, code, details = shard.call_stream("Backup", shard_pb2.BackupRequest(path="relative/dir"))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "absolute" in details

    restored = Shard(target, ShardSettings(), owners=None, opened=shard.opened)
    assert restored.user(b).user.tweet_count == 1
    assert restored.edges(a, shard_pb2.FOLLOWING) == [b]
    got = restored.ok("GetTweets", shard_pb2.GetTweetsRequest(tweet_ids=[tweet.tweet_id]))
    assert list(got.tweets) == [tweet]
    assert len(restored.outbox()) == 2  # the follow's and the post's fan-out come along


def test_read_inbox_can_leave_local_celebrities_to_the_router(open_shard) -> None:
    shard = open_shard(owners=HALF)
    fan, star = (shard.create_user(handle_in(lambda s: s < 2048, h)) for h in ("fan", "star"))
    shard.follow(fan, star, celebrity=True, version=1)
    shard.post(star, "held here")
    request = shard_pb2.ReadInboxRequest(user_id=fan, limit=10, skip_local_celebrities=True)
    page = shard.ok("ReadInbox", request)
    assert list(page.celebrity_ids) == [star] and not page.merged_celebrity_ids
    assert not page.page.tweets


def test_pull_timelines_per_author_and_its_limit(shard: Shard) -> None:
    a, b = shard.create_user("a"), shard.create_user("b")
    a_tweets = [shard.post(a, f"a{n}").tweet_id for n in range(4)]
    b_tweets = [shard.post(b, f"b{n}").tweet_id for n in range(2)]
    request = shard_pb2.PullTimelinesRequest(author_ids=[a, b], limit=3, per_author=True)
    got = [t.tweet_id for t in shard.ok("PullTimelines", request).tweets]
    assert got == a_tweets[::-1][:3] + b_tweets[::-1]  # each author's newest 3, in order
    too_many = shard_pb2.PullTimelinesRequest(
        author_ids=list(range(1, 30)), limit=1000, per_author=True
    )
    details = shard.fails("PullTimelines", too_many, grpc.StatusCode.INVALID_ARGUMENT)
    assert "29 authors x limit 1000" in details and "20000" in details


def test_a_user_follows_at_most_max_following_accounts(shard: Shard) -> None:
    """Home reads past the inbox's complete stretch, celebrity pulls and
    unfollows' inbox scans all grow with a user's followees."""
    a, b, c = shard.create_user("a"), shard.create_user("b"), shard.create_user("c")
    txn = shard.state.store.txn()
    record = shard.state.users.require(txn, a, "follower")
    record.user.following_count = MAX_FOLLOWING - 1  # as if 4,999 follows had come before
    shard.state.users.put(txn, record)
    txn.commit(sync=True)
    shard.follow(a, b)  # the 5,000th
    details = shard.fails(
        "Follow",
        shard_pb2.ShardFollowRequest(follower_id=a, followee_id=c),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert details == (
        f"user {a} already follows 5,000 accounts, the most one may follow (5,000); "
        "unfollow some first"
    )
    shard.follow(a, b)  # still idempotent at the limit
    assert shard.user(a).user.following_count == MAX_FOLLOWING
    assert shard.edges(a, shard_pb2.FOLLOWING) == [b]
    shard.ok("Unfollow", murmur_pb2.UnfollowRequest(follower_id=a, followee_id=b))
    shard.follow(a, c)
    assert shard.edges(a, shard_pb2.FOLLOWING) == [c]
