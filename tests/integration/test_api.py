"""The public API end to end: MurmurClient -> router -> LevelDB shards.

Every documented rule of ``murmur.v1.Murmur`` has a test here that fails if
the rule breaks. The cluster is shared by the module (nothing here kills a
server), so every test makes its own users with fresh handles.
"""

from __future__ import annotations

import random
import threading
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from client import errors
from client.client import MurmurClient
from murmur import page_tokens
from murmur.page_tokens import TokenKind
from murmur.v1 import murmur_pb2 as pb
from murmur.v1 import murmur_pb2_grpc as pb_grpc
from tests.integration.cluster import LocalCluster, eventually, unique_handle

pytestmark = pytest.mark.integration

MISSING_USER = 987_654_321_012
RPC_NAMES = {
    "CreateUser",
    "GetUser",
    "UpdateUser",
    "Follow",
    "Unfollow",
    "ListFollowers",
    "ListFollowing",
    "PostTweet",
    "GetTweet",
    "EditTweet",
    "DeleteTweet",
    "GetUserTimeline",
    "GetHomeTimeline",
    "Ping",
}


def new_user(
    client: MurmurClient,
    cluster: LocalCluster | None = None,
    shard: int | None = None,
    prefix: str = "u",
    **fields: str,
) -> pb.User:
    """A fresh user, on shard ``shard`` when given."""
    if shard is not None:
        assert cluster is not None
        handle = cluster.handle_on_shard(shard, prefix)
    else:
        handle = unique_handle(prefix)
    return client.create_user(handle, **fields)


def ids(items) -> list[int]:
    return [item.tweet_id if hasattr(item, "tweet_id") else item.user_id for item in items]


def all_followers(client: MurmurClient, user_id: int) -> list[int]:
    return [u.user_id for u in client.iter_followers(user_id, page_size=200)]


def all_following(client: MurmurClient, user_id: int) -> list[int]:
    return [u.user_id for u in client.iter_following(user_id, page_size=200)]


def timeline_ids(client: MurmurClient, user_id: int) -> list[int]:
    return [t.tweet_id for t in client.iter_user_timeline(user_id, page_size=200)]


def home_ids(client: MurmurClient, user_id: int) -> list[int]:
    return [t.tweet_id for t in client.iter_home_timeline(user_id, page_size=200)]


def raw_stub(cluster: LocalCluster) -> tuple[grpc.Channel, pb_grpc.MurmurStub]:
    channel = grpc.insecure_channel(cluster.target)
    return channel, pb_grpc.MurmurStub(channel)


# -- users ---------------------------------------------------------------------------


def test_create_user_and_get_it_by_id(client: MurmurClient) -> None:
    before = time.time()
    handle = unique_handle("Ada")
    user = client.create_user(handle, display_name="Ada Lovelace", bio="Analytical engines")
    assert user.user_id > 0
    assert user.handle == handle
    assert user.display_name == "Ada Lovelace"
    assert user.bio == "Analytical engines"
    assert (user.follower_count, user.following_count, user.tweet_count) == (0, 0, 0)
    assert not user.celebrity
    assert before - 5 <= user.created_at.ToMilliseconds() / 1000 <= time.time() + 5
    assert client.get_user(user_id=user.user_id) == user


def test_update_user_changes_the_profile_and_refuses_bad_fields(client: MurmurClient) -> None:
    handle = unique_handle("Grace")
    user = client.create_user(handle, display_name="Grace", bio="COBOL", request_id="g1")
    changed = client.update_user(user.user_id, display_name="Grace Hopper")
    assert (changed.handle, changed.display_name, changed.bio) == (handle, "Grace Hopper", "COBOL")
    assert changed.HasField("profile_updated_at") and not user.HasField("profile_updated_at")
    assert client.get_user(handle=handle) == changed
    # the create's own retry still gets the user back
    retried = client.create_user(handle, display_name="Grace", bio="COBOL", request_id="g1")
    assert retried == changed
    for fields, message in [
        ({"display_name": "x" * 51}, "display_name"),
        ({"bio": "y" * 161}, "bio"),
        ({"bio": "bad\x00"}, "bio"),
    ]:
        with pytest.raises(errors.InvalidArgument) as refused:
            client.update_user(user.user_id, **fields)
        assert message in refused.value.details
    with pytest.raises(errors.NotFound):
        client.update_user(2**63 + 12_345, bio="nobody")
    with pytest.raises(ValueError, match="display_name or bio"):
        client.update_user(user.user_id)
    assert client.get_user(user_id=user.user_id) == changed


def test_update_user_with_nothing_set_names_the_fields(cluster: LocalCluster) -> None:
    with grpc.insecure_channel(cluster.target) as channel:
        stub = pb_grpc.MurmurStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.UpdateUser(pb.UpdateUserRequest(user_id=1), timeout=10)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "nothing to update: set display_name or bio (or both)"


def test_get_user_by_handle_ignores_case(client: MurmurClient) -> None:
    handle = unique_handle("MiXeD")
    user = client.create_user(handle)
    for spelling in (handle, handle.lower(), handle.upper(), handle.swapcase()):
        found = client.get_user(handle=spelling)
        assert found.user_id == user.user_id
        assert found.handle == handle  # as typed at creation


def test_handles_are_unique_ignoring_case(client: MurmurClient) -> None:
    handle = unique_handle("Dup")
    first = client.create_user(handle)
    for spelling in (handle, handle.upper(), handle.lower(), handle.swapcase()):
        with pytest.raises(errors.AlreadyExists) as caught:
            client.create_user(spelling)
        assert handle.lower() in caught.value.details.lower()
    assert client.get_user(handle=handle).user_id == first.user_id

    # racing registrations of one handle in different cases: exactly one wins
    contested = unique_handle("Race")
    spellings = [contested, contested.lower(), contested.upper(), contested.swapcase()] * 4

    def register(spelling: str) -> int | None:
        try:
            return client.create_user(spelling).user_id
        except errors.AlreadyExists:
            return None

    with ThreadPoolExecutor(8) as pool:
        winners = [w for w in pool.map(register, spellings) if w is not None]
    assert len(winners) == 1
    assert client.get_user(handle=contested).user_id == winners[0]


def test_handle_may_be_1_to_15_word_characters(client: MurmurClient) -> None:
    one = random.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert client.create_user(one).handle == one
    fifteen = ("a_Z9" + unique_handle("x") + "0" * 15)[:15]
    assert len(fifteen) == 15
    assert client.create_user(fifteen).handle == fifteen


@pytest.mark.parametrize(
    "handle",
    ["", "a" * 16, "has-dash", "has space", "dot.dot", "café", "emoji😀", "tab\t", "@at"],
    ids=["empty", "16-chars", "dash", "space", "dot", "non-ascii", "emoji", "tab", "at-sign"],
)
def test_bad_handles_are_invalid_argument(client: MurmurClient, handle: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        client.create_user(handle)
    assert "handle" in caught.value.details


def test_display_name_at_most_50_and_bio_at_most_160(client: MurmurClient) -> None:
    user = client.create_user(unique_handle("lim"), display_name="n" * 50, bio="b" * 160)
    assert client.get_user(user_id=user.user_id).display_name == "n" * 50
    assert client.get_user(user_id=user.user_id).bio == "b" * 160
    with pytest.raises(errors.InvalidArgument) as caught:
        client.create_user(unique_handle("lim"), display_name="n" * 51)
    assert "display_name" in caught.value.details
    with pytest.raises(errors.InvalidArgument) as caught:
        client.create_user(unique_handle("lim"), bio="b" * 161)
    assert "bio" in caught.value.details


def test_get_user_needs_a_valid_key(cluster: LocalCluster) -> None:
    channel, stub = raw_stub(cluster)
    with channel:
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetUser(pb.GetUserRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetUser(pb.GetUserRequest(user_id=0), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "user_id" in caught.value.details()


# -- tweet text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", " ", " \n\t ", "\u3000\u2003", "x" * 281, "é" * 281, "e\u0301" * 281, "😀" * 281],
    ids=[
        "empty",
        "space",
        "whitespace",
        "unicode-whitespace",
        "281-ascii",
        "281-composed",
        "281-after-nfc",
        "281-emoji",
    ],
)
def test_bad_tweet_text_is_invalid_argument_naming_text(client: MurmurClient, text: str) -> None:
    author = new_user(client, prefix="txt")
    with pytest.raises(errors.InvalidArgument) as caught:
        client.post_tweet(author.user_id, text)
    assert "text" in caught.value.details
    good = client.post_tweet(author.user_id, "fine")
    with pytest.raises(errors.InvalidArgument) as caught:
        client.edit_tweet(good.tweet_id, author.user_id, text)
    assert "text" in caught.value.details
    assert client.get_tweet(good.tweet_id).text == "fine"
    assert client.get_user(user_id=author.user_id).tweet_count == 1


@pytest.mark.parametrize(
    "text",
    ["\u200b\u200b", "\u2800", "\ufeff", "\u0301", "\u3164 \u200d"],
    ids=["zero-width-spaces", "braille-blank", "byte-order-mark", "lone-combining", "fillers"],
)
def test_tweet_text_that_shows_nothing_is_invalid(client: MurmurClient, text: str) -> None:
    author = new_user(client, prefix="txt")
    with pytest.raises(errors.InvalidArgument) as caught:
        client.post_tweet(author.user_id, text)
    assert "visible character" in caught.value.details
    assert client.post_tweet(author.user_id, f"{text}x").text == f"{text}x"


@pytest.mark.parametrize(
    "text",
    ["x" * 280, "😀" * 280, "e\u0301" * 280, "  padded  ", "a\nb", "日本語のつぶやき"],
    ids=["280-ascii", "280-emoji", "280-after-nfc", "padded", "newline", "cjk"],
)
def test_tweet_text_up_to_280_code_points_after_nfc(client: MurmurClient, text: str) -> None:
    author = new_user(client, prefix="txt")
    tweet = client.post_tweet(author.user_id, text)
    assert tweet.text == unicodedata.normalize("NFC", text)
    assert client.get_tweet(tweet.tweet_id).text == unicodedata.normalize("NFC", text)


# -- ids -------------------------------------------------------------------------------


def test_ids_are_64_bit_and_time_ordered(client: MurmurClient, cluster: LocalCluster) -> None:
    users = []
    for shard in (0, 1, 2, 0):
        users.append(new_user(client, cluster, shard, "ids"))
        time.sleep(0.003)
    assert ids(users) == sorted(ids(users))
    assert len(set(ids(users))) == len(users)
    tweets = []
    for author in users * 3:
        tweets.append(client.post_tweet(author.user_id, "tick"))
        time.sleep(0.003)
    tweet_ids = ids(tweets)
    assert tweet_ids == sorted(tweet_ids), "a later tweet must have a larger id"
    assert len(set(tweet_ids)) == len(tweet_ids)
    for any_id in tweet_ids + ids(users):
        assert 1 << 32 < any_id < 1 << 63  # 64-bit, and safe as a signed int64 too
    stamps = [t.created_at.ToMilliseconds() for t in tweets]
    assert stamps == sorted(stamps)
    # a burst from one author inside one millisecond still gets increasing ids
    burst = [client.post_tweet(users[0].user_id, f"burst {i}").tweet_id for i in range(30)]
    assert burst == sorted(burst) and len(set(burst)) == 30


# -- tweets ----------------------------------------------------------------------------


def test_get_edit_delete_tweet(client: MurmurClient) -> None:
    author = new_user(client, prefix="ed")
    tweet = client.post_tweet(author.user_id, "first draft")
    assert tweet.user_id == author.user_id
    assert not tweet.HasField("edited_at")
    assert client.get_tweet(tweet.tweet_id) == tweet
    assert client.get_user(user_id=author.user_id).tweet_count == 1

    edited = client.edit_tweet(tweet.tweet_id, author.user_id, "second draft")
    assert edited.tweet_id == tweet.tweet_id
    assert edited.text == "second draft"
    assert edited.HasField("edited_at")
    assert edited.created_at == tweet.created_at
    assert edited.edited_at.ToMilliseconds() >= tweet.created_at.ToMilliseconds()
    assert client.get_tweet(tweet.tweet_id) == edited
    assert list(client.user_timeline(author.user_id).tweets) == [edited]
    assert client.get_user(user_id=author.user_id).tweet_count == 1

    client.delete_tweet(tweet.tweet_id, author.user_id)
    with pytest.raises(errors.NotFound) as caught:
        client.get_tweet(tweet.tweet_id)
    assert str(tweet.tweet_id) in caught.value.details
    assert list(client.user_timeline(author.user_id).tweets) == []
    assert client.get_user(user_id=author.user_id).tweet_count == 0
    with pytest.raises(errors.NotFound):
        client.delete_tweet(tweet.tweet_id, author.user_id)
    with pytest.raises(errors.NotFound):
        client.edit_tweet(tweet.tweet_id, author.user_id, "too late")
    assert client.get_user(user_id=author.user_id).tweet_count == 0


def test_only_the_author_may_edit_or_delete(client: MurmurClient, cluster: LocalCluster) -> None:
    author = new_user(client, cluster, 0, "own")
    other = new_user(client, cluster, 1, "oth")
    tweet = client.post_tweet(author.user_id, "mine")
    with pytest.raises(errors.PermissionDenied) as caught:
        client.edit_tweet(tweet.tweet_id, other.user_id, "yours now")
    assert str(tweet.tweet_id) in caught.value.details
    with pytest.raises(errors.PermissionDenied):
        client.delete_tweet(tweet.tweet_id, other.user_id)
    with pytest.raises(errors.PermissionDenied):
        client.delete_tweet(tweet.tweet_id, MISSING_USER)
    assert client.get_tweet(tweet.tweet_id) == tweet
    assert client.get_user(user_id=author.user_id).tweet_count == 1


def test_create_user_repeated_with_its_request_id_returns_the_same_user(
    client: MurmurClient,
) -> None:
    handle = unique_handle("cu")
    first = client.create_user(handle, bio="first", request_id="signup-1")
    with ThreadPoolExecutor(8) as pool:  # racing retries of one lost answer
        racing = list(
            pool.map(
                lambda _: client.create_user(handle, bio="first", request_id="signup-1"),
                range(16),
            )
        )
    assert {u.user_id for u in racing} == {first.user_id}
    with pytest.raises(errors.AlreadyExists, match="already taken"):
        client.create_user(handle.upper(), request_id="signup-2")
    with pytest.raises(errors.InvalidArgument) as caught:  # the same key, another profile
        client.create_user(handle, bio="second", request_id="signup-1")
    assert caught.value.details == (
        f"request_id 'signup-1' was used for user {first.user_id} (@{handle}) with another "
        "bio; a retry repeats its request unchanged"
    )
    assert client.get_user(user_id=first.user_id).bio == "first"
    with pytest.raises(errors.InvalidArgument, match="request_id"):
        client.create_user(unique_handle("cu"), request_id="r" * 65)


def test_repeated_request_id_returns_the_first_tweet_and_counts_once(
    client: MurmurClient,
) -> None:
    author = new_user(client, prefix="rid")
    first = client.post_tweet(author.user_id, "only once", request_id="req-1")
    again = client.post_tweet(author.user_id, "only once", request_id="req-1")
    assert again == first
    with pytest.raises(errors.InvalidArgument) as caught:  # not a retry: a client's bug
        client.post_tweet(author.user_id, "different text", request_id="req-1")
    assert caught.value.details.startswith(
        f"request_id 'req-1' was used for tweet {first.tweet_id} with another text"
    )
    assert client.get_user(user_id=author.user_id).tweet_count == 1
    assert timeline_ids(client, author.user_id) == [first.tweet_id]

    # concurrent retries with one request id still post once
    with ThreadPoolExecutor(8) as pool:
        racing = list(
            pool.map(
                lambda _: client.post_tweet(author.user_id, "race", request_id="req-2"),
                range(16),
            )
        )
    assert len({t.tweet_id for t in racing}) == 1
    assert client.get_user(user_id=author.user_id).tweet_count == 2

    # the key is per user, and a new key posts a new tweet
    other = new_user(client, prefix="rid")
    theirs = client.post_tweet(other.user_id, "only once", request_id="req-1")
    assert theirs.tweet_id != first.tweet_id and theirs.user_id == other.user_id
    with pytest.raises(errors.InvalidArgument) as caught:
        client.post_tweet(author.user_id, "too long a key", request_id="k" * 65)
    assert "request_id" in caught.value.details
    assert client.post_tweet(author.user_id, "64 is fine", request_id="k" * 64).text
    fresh = client.post_tweet(author.user_id, "only once", request_id="req-3")
    assert fresh.tweet_id not in (first.tweet_id, racing[0].tweet_id)
    assert client.get_user(user_id=author.user_id).tweet_count == 4
    assert len(timeline_ids(client, author.user_id)) == 4


def test_a_retried_post_whose_tweet_was_deleted_is_not_found(client: MurmurClient) -> None:
    """The retry must neither bring the tweet back nor post it again."""
    author = new_user(client, prefix="rdel")
    first = client.post_tweet(author.user_id, "soon gone", request_id="gone-1")
    client.delete_tweet(first.tweet_id, author.user_id)
    with pytest.raises(errors.NotFound) as caught:
        client.post_tweet(author.user_id, "soon gone", request_id="gone-1")
    assert str(first.tweet_id) in caught.value.details and "gone-1" in caught.value.details
    assert timeline_ids(client, author.user_id) == []
    assert client.get_user(user_id=author.user_id).tweet_count == 0


def test_not_found_messages_name_what_is_missing(client: MurmurClient) -> None:
    user = new_user(client, prefix="nf")
    gone = client.post_tweet(user.user_id, "soon gone")
    client.delete_tweet(gone.tweet_id, user.user_id)
    missing_tweet = gone.tweet_id
    calls: list[tuple[str, Callable[[], object], int]] = [
        ("get_user", lambda: client.get_user(user_id=MISSING_USER), MISSING_USER),
        ("get_tweet", lambda: client.get_tweet(missing_tweet), missing_tweet),
        ("edit_tweet", lambda: client.edit_tweet(missing_tweet, user.user_id, "x"), missing_tweet),
        ("delete_tweet", lambda: client.delete_tweet(missing_tweet, user.user_id), missing_tweet),
        (
            "follow missing followee",
            lambda: client.follow(user.user_id, MISSING_USER),
            MISSING_USER,
        ),
        (
            "follow by missing follower",
            lambda: client.follow(MISSING_USER, user.user_id),
            MISSING_USER,
        ),
        ("post_tweet", lambda: client.post_tweet(MISSING_USER, "hello"), MISSING_USER),
        ("user_timeline", lambda: client.user_timeline(MISSING_USER), MISSING_USER),
        ("home_timeline", lambda: client.home_timeline(MISSING_USER), MISSING_USER),
        ("list_followers", lambda: client.list_followers(MISSING_USER), MISSING_USER),
        ("list_following", lambda: client.list_following(MISSING_USER), MISSING_USER),
    ]
    for name, call, missing in calls:
        with pytest.raises(errors.NotFound) as caught:
            call()
        assert str(missing) in caught.value.details, (name, caught.value.details)
    handle = unique_handle("nobody")
    with pytest.raises(errors.NotFound) as caught:
        client.get_user(handle=handle)
    assert handle in caught.value.details


# -- follows -----------------------------------------------------------------------------


def fanout_barrier(client: MurmurClient, cluster: LocalCluster, source: int, dest: int) -> None:
    """Return once every fan-out record queued so far from shard ``source``
    to shard ``dest`` has been applied and its round has ended.

    The outbox delivers records in order and removes them only once applied:
    when a follow queued after them shows on ``dest``, they were applied.
    A second follow, queued after the first showed, goes in a later round
    (rounds run one at a time; slots do not move here), so when it shows
    the round that carried them is over and no retry can deliver them
    again."""
    for _ in range(2):
        probe = new_user(client, cluster, source, "fb")
        target = new_user(client, cluster, dest, "fb")
        client.follow(probe.user_id, target.user_id)
        eventually(lambda t=target.user_id, p=probe.user_id: _assert_followers(client, t, [p]))


def _assert_followers(client: MurmurClient, user_id: int, want: list[int]) -> None:
    assert all_followers(client, user_id) == want


def test_follow_is_idempotent(client: MurmurClient, cluster: LocalCluster) -> None:
    follower = new_user(client, cluster, 0, "fi")
    followee = new_user(client, cluster, 2, "fi")
    for _ in range(3):
        client.follow(follower.user_id, followee.user_id)
    assert client.get_user(user_id=follower.user_id).following_count == 1
    assert all_following(client, follower.user_id) == [followee.user_id]

    def settled() -> None:
        assert all_followers(client, followee.user_id) == [follower.user_id]
        assert client.get_user(user_id=followee.user_id).follower_count == 1

    eventually(settled)
    fanout_barrier(client, cluster, source=0, dest=2)  # a late duplicate has landed by now
    settled()
    assert client.get_user(user_id=follower.user_id).following_count == 1


def test_unfollow_of_someone_not_followed_is_a_noop(
    client: MurmurClient, cluster: LocalCluster
) -> None:
    a = new_user(client, cluster, 1, "un")
    b = new_user(client, cluster, 2, "un")
    c = new_user(client, cluster, 0, "un")
    client.unfollow(a.user_id, b.user_id)
    client.follow(a.user_id, c.user_id)
    client.unfollow(a.user_id, b.user_id)
    client.unfollow(a.user_id, MISSING_USER)
    assert client.get_user(user_id=a.user_id).following_count == 1
    assert all_following(client, a.user_id) == [c.user_id]
    eventually(lambda: _assert_counts(client, c.user_id, followers=1))
    assert client.get_user(user_id=b.user_id).follower_count == 0
    assert all_followers(client, b.user_id) == []

    client.unfollow(a.user_id, c.user_id)
    client.unfollow(a.user_id, c.user_id)  # twice: the second is a no-op
    assert client.get_user(user_id=a.user_id).following_count == 0
    assert all_following(client, a.user_id) == []
    eventually(lambda: _assert_counts(client, c.user_id, followers=0))
    assert all_followers(client, c.user_id) == []


def _assert_counts(client: MurmurClient, user_id: int, followers: int) -> None:
    assert client.get_user(user_id=user_id).follower_count == followers


def test_following_yourself_is_invalid_argument(client: MurmurClient) -> None:
    me = new_user(client, prefix="self")
    with pytest.raises(errors.InvalidArgument) as caught:
        client.follow(me.user_id, me.user_id)
    assert "follow" in caught.value.details
    assert client.get_user(user_id=me.user_id).following_count == 0
    assert all_following(client, me.user_id) == []


def test_following_a_missing_user_is_not_found(client: MurmurClient) -> None:
    me = new_user(client, prefix="miss")
    with pytest.raises(errors.NotFound) as caught:
        client.follow(me.user_id, MISSING_USER)
    assert str(MISSING_USER) in caught.value.details
    assert client.get_user(user_id=me.user_id).following_count == 0
    assert all_following(client, me.user_id) == []


@pytest.fixture(scope="module")
def crowd(cluster: LocalCluster) -> tuple[pb.User, list[pb.User]]:
    """A star with 45 followers, who also follows all 45 of them."""
    with MurmurClient(cluster.target) as client:
        star = new_user(client, prefix="star")
        with ThreadPoolExecutor(8) as pool:
            fans = list(pool.map(lambda _: new_user(client, prefix="fan"), range(45)))
            list(pool.map(lambda f: client.follow(f.user_id, star.user_id), fans))
            list(pool.map(lambda f: client.follow(star.user_id, f.user_id), fans))
        eventually(lambda: _assert_counts(client, star.user_id, followers=45))
    return star, fans


def _page_through(list_page, user_id: int, page_size: int) -> list[list[pb.User]]:
    pages, token = [], ""
    while True:
        page = list_page(user_id, page_size=page_size, page_token=token)
        pages.append(list(page.users))
        if not page.next_page_token:
            return pages
        assert len(pages) < 50, "paging does not end"
        token = page.next_page_token


@pytest.mark.parametrize("direction", ["followers", "following"])
def test_listing_45_users_in_pages_of_10(
    client: MurmurClient, crowd: tuple[pb.User, list[pb.User]], direction: str
) -> None:
    star, fans = crowd
    list_page = client.list_followers if direction == "followers" else client.list_following
    pages = _page_through(list_page, star.user_id, 10)
    assert [len(p) for p in pages] == [10, 10, 10, 10, 5]
    listed = [u for page in pages for u in page]
    assert ids(listed) == sorted(ids(fans)), "every user once, in user-id order"
    by_id = {f.user_id: f for f in fans}
    for user in listed:
        assert user.handle == by_id[user.user_id].handle
    star_now = client.get_user(user_id=star.user_id)
    assert star_now.follower_count == 45 and star_now.following_count == 45


def test_list_page_size_0_means_20_and_above_200_means_200(
    client: MurmurClient, crowd: tuple[pb.User, list[pb.User]]
) -> None:
    star, _ = crowd
    for list_page in (client.list_followers, client.list_following):
        page = list_page(star.user_id, page_size=0)
        assert len(page.users) == 20 and page.next_page_token
        page = list_page(star.user_id, page_size=1000)
        assert len(page.users) == 45 and not page.next_page_token
        with pytest.raises(errors.InvalidArgument) as caught:
            list_page(star.user_id, page_size=-1)
        assert "page_size" in caught.value.details


# -- counters under concurrency ----------------------------------------------------------------


def test_counters_stay_exact_under_concurrent_writes(
    client: MurmurClient, cluster: LocalCluster
) -> None:
    users = [new_user(client, cluster, i % 3, "cc") for i in range(9)]
    user_ids = [u.user_id for u in users]
    rng = random.Random(20250101)
    lock = threading.Lock()
    posted: dict[int, list[int]] = {u: [] for u in user_ids}
    deleted: dict[int, int] = dict.fromkeys(user_ids, 0)
    posts: dict[int, int] = dict.fromkeys(user_ids, 0)

    plan = []
    for _ in range(500):
        a, b = rng.sample(user_ids, 2)
        plan.append((rng.choice(["follow", "follow", "unfollow", "post", "delete"]), a, b))

    def run(step: tuple[str, int, int]) -> None:
        op, a, b = step
        if op == "follow":
            client.follow(a, b)
        elif op == "unfollow":
            client.unfollow(a, b)
        elif op == "post":
            tweet = client.post_tweet(a, f"hello from {a}")
            with lock:
                posted[a].append(tweet.tweet_id)
                posts[a] += 1
        else:
            with lock:
                if not posted[a]:
                    return
                victim = rng.choice(posted[a])
            try:
                client.delete_tweet(victim, a)
            except errors.NotFound:
                return  # another thread deleted it first
            with lock:
                deleted[a] += 1
                posted[a].remove(victim)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, plan))

    following = {u: set(all_following(client, u)) for u in user_ids}
    for u in user_ids:
        record = client.get_user(user_id=u)
        assert record.following_count == len(following[u]), u
        assert record.tweet_count == posts[u] - deleted[u], u
        assert sorted(timeline_ids(client, u)) == sorted(posted[u]), u

    def followers_settled() -> None:
        for u in user_ids:
            listed = set(all_followers(client, u))
            expected = {f for f in user_ids if u in following[f]}
            assert listed == expected, u
            assert client.get_user(user_id=u).follower_count == len(listed), u

    eventually(followers_settled, timeout=10)


# -- timelines ---------------------------------------------------------------------------------


def test_user_timeline_is_newest_first(client: MurmurClient) -> None:
    author = new_user(client, prefix="tl")
    posted = [client.post_tweet(author.user_id, f"tweet {i}") for i in range(6)]
    page = client.user_timeline(author.user_id)
    assert ids(page.tweets) == list(reversed(ids(posted)))
    assert [t.text for t in page.tweets] == [f"tweet {i}" for i in reversed(range(6))]
    assert not page.next_page_token


@pytest.mark.parametrize("which", ["user", "home"])
def test_a_full_last_page_has_no_token(client: MurmurClient, which: str) -> None:
    """The proto promises an empty token on the last page; a full last page
    used to carry one that led to an empty page."""
    author = new_user(client, prefix="full")
    posted = ids(client.post_tweet(author.user_id, f"t{i}") for i in range(4))
    read = client.user_timeline if which == "user" else client.home_timeline
    newest_first = list(reversed(posted))

    def whole_page():
        page = read(author.user_id, page_size=4)
        assert ids(page.tweets) == newest_first  # a home timeline fills by fan-out
        return page

    assert not eventually(whole_page).next_page_token
    first = read(author.user_id, page_size=2)
    assert ids(first.tweets) == newest_first[:2] and first.next_page_token
    last = read(author.user_id, page_size=2, page_token=first.next_page_token)
    assert ids(last.tweets) == newest_first[2:] and not last.next_page_token


@pytest.fixture(scope="module")
def prolific(cluster: LocalCluster) -> tuple[pb.User, list[int]]:
    """A user with 205 tweets (their home timeline holds them too)."""
    with MurmurClient(cluster.target) as client:
        author = new_user(client, prefix="many")
        with ThreadPoolExecutor(8) as pool:
            tweets = list(
                pool.map(lambda i: client.post_tweet(author.user_id, f"n{i}"), range(205))
            )
    return author, sorted(ids(tweets), reverse=True)


@pytest.mark.parametrize("which", ["user", "home"])
def test_timeline_page_size_0_means_20_and_above_200_means_200(
    client: MurmurClient, prolific: tuple[pb.User, list[int]], which: str
) -> None:
    author, newest_first = prolific
    read = client.user_timeline if which == "user" else client.home_timeline

    def settled():
        page = read(author.user_id, page_size=0)
        assert ids(page.tweets) == newest_first[:20]
        return page

    page = eventually(settled)
    assert page.next_page_token
    page = read(author.user_id, page_size=1000)
    assert ids(page.tweets) == newest_first[:200]
    rest = read(author.user_id, page_size=200, page_token=page.next_page_token)
    assert ids(rest.tweets) == newest_first[200:]
    assert not rest.next_page_token
    with pytest.raises(errors.InvalidArgument) as caught:
        read(author.user_id, page_size=-5)
    assert "page_size" in caught.value.details


def _tokens_for_other_listings(kind: TokenKind, owner: int) -> list[str]:
    return [page_tokens.encode(other, owner, 12345) for other in TokenKind if other != kind]


@pytest.mark.parametrize(
    ("listing", "kind"),
    [
        ("user_timeline", TokenKind.USER_TIMELINE),
        ("home_timeline", TokenKind.HOME_TIMELINE),
        ("list_followers", TokenKind.FOLLOWERS),
        ("list_following", TokenKind.FOLLOWING),
    ],
)
def test_malformed_page_token_is_invalid_argument(
    client: MurmurClient, listing: str, kind: TokenKind
) -> None:
    user = new_user(client, prefix="tok")
    client.post_tweet(user.user_id, "something to page")
    read = getattr(client, listing)
    good = page_tokens.encode(kind, user.user_id, 1 << 62)
    read(user.user_id, page_size=5, page_token=good)  # a well-formed token is accepted
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    bad_tokens = ["garbage!!", "not a token", "AAAA", good[:-3], forged]
    bad_tokens += _tokens_for_other_listings(kind, user.user_id)
    for token in bad_tokens:
        with pytest.raises(errors.InvalidArgument) as caught:
            read(user.user_id, page_size=5, page_token=token)
        assert "page_token" in caught.value.details, token
    other = new_user(client, prefix="tok")
    with pytest.raises(errors.InvalidArgument) as caught:
        read(other.user_id, page_size=5, page_token=good)  # the right listing, someone else's
    assert caught.value.details == (
        f"page_token was issued for user {user.user_id}, not user {other.user_id}"
    )


@pytest.mark.parametrize("which", ["user", "home"])
def test_paging_while_new_tweets_arrive_never_repeats_nor_skips(
    client: MurmurClient, cluster: LocalCluster, which: str
) -> None:
    author = new_user(client, cluster, 1, "pg")
    reader = new_user(client, cluster, 2, "pgr")
    client.follow(reader.user_id, author.user_id)
    original = [client.post_tweet(author.user_id, f"old {i}").tweet_id for i in range(30)]
    if which == "user":
        owner, read = author.user_id, client.user_timeline
    else:
        owner, read = reader.user_id, client.home_timeline
        want = list(reversed(original))
        eventually(lambda: _assert_home(client, reader.user_id, want))
    seen: list[int] = []
    token = ""
    newer: list[int] = []
    while True:
        page = read(owner, page_size=7, page_token=token)
        seen.extend(ids(page.tweets))
        # new tweets arrive between pages
        for i in range(3):
            newer.append(client.post_tweet(author.user_id, f"new {len(seen)} {i}").tweet_id)
        if not page.next_page_token:
            break
        token = page.next_page_token
    assert seen == list(reversed(original)), "every older tweet exactly once, newest first"
    assert not set(seen) & set(newer)


# -- home timeline -------------------------------------------------------------------------------


class WriteRecord:
    """What the test itself wrote: follows, and each live tweet's author and
    latest text. The expected timelines come from here, not from the
    system, so a write it lost cannot show the same on both sides.

    Writes to one follow edge, or to one tweet, are serialized by a lock of
    their own, so the order they took effect is the order recorded; writes
    to different edges and tweets (also of the same user) still race."""

    def __init__(self, users: list[int]) -> None:
        self.lock = threading.Lock()
        self.follows: dict[int, set[int]] = {u: set() for u in users}
        self.authored: dict[int, list[int]] = {u: [] for u in users}
        self.texts: dict[int, str] = {}  # live tweets only
        self._key_locks: dict[tuple, threading.Lock] = {}

    def key_lock(self, *key: object) -> threading.Lock:
        with self.lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def pick_live(self, author: int, r: float) -> int | None:
        with self.lock:
            live = self.authored[author]
            return live[int(r * len(live))] if live else None

    def timeline(self, author: int) -> list[tuple[int, str]]:
        with self.lock:
            return sorted(((t, self.texts[t]) for t in self.authored[author]), reverse=True)

    def home(self, reader: int) -> list[tuple[int, str]]:
        authors = [reader, *self.follows[reader]]
        return sorted((entry for a in authors for entry in self.timeline(a)), reverse=True)


def apply_step(client: MurmurClient, record: WriteRecord, step: tuple) -> None:
    """One write of the plan, and its record once acknowledged."""
    index, op, a, b, r = step
    if op == "follow":
        with record.key_lock("edge", a, b):
            client.follow(a, b)
            with record.lock:
                record.follows[a].add(b)
    elif op == "unfollow":
        with record.key_lock("edge", a, b):
            client.unfollow(a, b)
            with record.lock:
                record.follows[a].discard(b)
    elif op == "post":
        text = f"post {index}"
        tweet = client.post_tweet(a, text)
        with record.lock:
            record.authored[a].append(tweet.tweet_id)
            record.texts[tweet.tweet_id] = text
    else:
        apply_tweet_change(client, record, index, op, a, r)


def apply_tweet_change(
    client: MurmurClient, record: WriteRecord, index: int, op: str, author: int, r: float
) -> None:
    """Edit or delete one of ``author``'s live tweets; a tweet deleted by
    another thread meanwhile is skipped (the record says so under its lock)."""
    tweet_id = record.pick_live(author, r)
    if tweet_id is None:
        return
    with record.key_lock("tweet", tweet_id):
        with record.lock:
            if tweet_id not in record.texts:
                return
        if op == "edit":
            client.edit_tweet(tweet_id, author, f"edit {index}")
            with record.lock:
                record.texts[tweet_id] = f"edit {index}"
        else:
            client.delete_tweet(tweet_id, author)
            with record.lock:
                del record.texts[tweet_id]
                record.authored[author].remove(tweet_id)


def test_home_timelines_converge_under_concurrent_writes(
    client: MurmurClient, cluster: LocalCluster
) -> None:
    """Follows, unfollows, posts, edits and deletes racing on 8 threads: once
    fan-out settles, every home timeline is exactly the reader's own tweets and
    their followees' tweets, with the texts the test last wrote."""
    users = [new_user(client, cluster, i % 3, "cv").user_id for i in range(9)]
    rng = random.Random(7)
    ops = ["follow", "follow", "unfollow", "post", "post", "edit", "delete"]
    plan = [(i, rng.choice(ops), *rng.sample(users, 2), rng.random()) for i in range(600)]
    record = WriteRecord(users)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda step: apply_step(client, record, step), plan))

    for u in users:
        own = [(t.tweet_id, t.text) for t in client.iter_user_timeline(u, page_size=200)]
        assert own == record.timeline(u), u
        assert sorted(all_following(client, u)) == sorted(record.follows[u]), u

    def converged() -> None:
        for u in users:
            got = [(t.tweet_id, t.text) for t in client.iter_home_timeline(u, page_size=200)]
            assert got == record.home(u), u

    eventually(converged, timeout=10)


def test_home_timeline_shows_followees_edits_and_deletes(
    client: MurmurClient, cluster: LocalCluster
) -> None:
    reader = new_user(client, cluster, 0, "rd")
    a = new_user(client, cluster, 1, "ha")
    b = new_user(client, cluster, 2, "hb")
    c = new_user(client, cluster, 0, "hc")
    stranger = new_user(client, cluster, 1, "hs")
    for followee in (a, b, c):
        client.follow(reader.user_id, followee.user_id)
    posted = [
        client.post_tweet(a.user_id, "from a"),
        client.post_tweet(stranger.user_id, "not for reader"),
        client.post_tweet(b.user_id, "from b"),
        client.post_tweet(c.user_id, "from c"),
        client.post_tweet(reader.user_id, "my own"),
        client.post_tweet(a.user_id, "from a again"),
    ]
    expected = sorted((t.tweet_id for t in posted if t.user_id != stranger.user_id), reverse=True)

    def arrived() -> None:
        assert home_ids(client, reader.user_id) == expected

    eventually(arrived)

    edited = client.edit_tweet(posted[0].tweet_id, a.user_id, "from a, edited")

    def edit_shown() -> None:
        tweets = {t.tweet_id: t for t in client.home_timeline(reader.user_id).tweets}
        assert tweets[edited.tweet_id].text == "from a, edited"
        assert tweets[edited.tweet_id].HasField("edited_at")

    eventually(edit_shown)

    client.delete_tweet(posted[2].tweet_id, b.user_id)
    expected.remove(posted[2].tweet_id)
    eventually(arrived)

    client.unfollow(reader.user_id, c.user_id)
    expected.remove(posted[3].tweet_id)
    eventually(arrived)


def test_home_timeline_backfills_on_follow(client: MurmurClient, cluster: LocalCluster) -> None:
    reader = new_user(client, cluster, 2, "bf")
    author = new_user(client, cluster, 1, "bfa")
    earlier = [client.post_tweet(author.user_id, f"before follow {i}").tweet_id for i in range(3)]
    client.follow(reader.user_id, author.user_id)
    later = client.post_tweet(author.user_id, "after follow").tweet_id
    want = sorted([*earlier, later], reverse=True)
    eventually(lambda: _assert_home(client, reader.user_id, want))


def _assert_home(client: MurmurClient, user_id: int, want: list[int]) -> None:
    assert home_ids(client, user_id) == want


def test_home_timeline_pages_newest_first(client: MurmurClient, cluster: LocalCluster) -> None:
    reader = new_user(client, cluster, 1, "hp")
    author = new_user(client, cluster, 0, "hpa")
    client.follow(reader.user_id, author.user_id)
    posted = [client.post_tweet(author.user_id, f"p{i}").tweet_id for i in range(25)]
    want = list(reversed(posted))
    eventually(lambda: _assert_home(client, reader.user_id, want))
    pages, token = [], ""
    while True:
        page = client.home_timeline(reader.user_id, page_size=10, page_token=token)
        assert not page.partial
        pages.append(ids(page.tweets))
        if not page.next_page_token:
            break
        token = page.next_page_token
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [t for p in pages for t in p] == want


# -- ping, health, reflection --------------------------------------------------------------------


def test_ping_reaches_the_owning_shard(client: MurmurClient, cluster: LocalCluster) -> None:
    assert client.ping().shard_id == cluster.shard_for_slot(0)
    for shard in range(cluster.shards):
        user = new_user(client, cluster, shard, "png")
        assert cluster.shard_for_user(user.user_id) == shard
        assert client.ping(user.user_id).shard_id == shard


def _servers(cluster: LocalCluster) -> list[tuple[str, str]]:
    return [(cluster.target, "murmur.v1.Murmur")] + [
        (cluster.shard_address(i), "murmur.v1.Shard") for i in range(cluster.shards)
    ]


def test_health_check_reports_serving_on_router_and_shards(cluster: LocalCluster) -> None:
    for address, service in _servers(cluster):
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", service):
                reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, (address, name)
            with pytest.raises(grpc.RpcError) as caught:
                health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def _reflect(channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    return next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))


def test_reflection_lists_services_on_router_and_shards(cluster: LocalCluster) -> None:
    for address, service in _servers(cluster):
        with grpc.insecure_channel(address) as channel:
            reply = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
            names = {s.name for s in reply.list_services_response.service}
            assert service in names, (address, names)
            assert "grpc.health.v1.Health" in names
            assert "grpc.reflection.v1alpha.ServerReflection" in names


def test_reflection_describes_the_public_api(cluster: LocalCluster) -> None:
    """What grpcurl needs: the descriptor of murmur.v1.Murmur and its imports."""
    with grpc.insecure_channel(cluster.target) as channel:
        reply = _reflect(
            channel,
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="murmur.v1.Murmur"),
        )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in reply.file_descriptor_response.file_descriptor_proto
    ]
    assert files, reply
    pool = descriptor_pool.DescriptorPool()
    pending = list(files)
    while pending:  # add files once their imports are in
        progressed = False
        for proto in list(pending):
            try:
                pool.Add(proto)
            except TypeError:
                continue
            pending.remove(proto)
            progressed = True
        assert progressed, [p.name for p in pending]
    service = pool.FindServiceByName("murmur.v1.Murmur")
    assert set(service.methods_by_name) == RPC_NAMES


def test_a_burst_of_concurrent_calls_on_one_channel_is_served_not_cancelled(
    cluster: LocalCluster,
) -> None:
    """gRPC's default queue limits dropped ~10% of 2,000 concurrent calls as
    CANCELLED; every call of a burst must be served by its deadline."""
    import asyncio

    async def burst() -> list[str]:
        async with grpc.aio.insecure_channel(cluster.target) as channel:
            stub = pb_grpc.MurmurStub(channel)

            async def one() -> str:
                try:
                    await stub.Ping(pb.PingRequest(), timeout=60)
                except grpc.aio.AioRpcError as exc:
                    return exc.code().name
                return "OK"

            return await asyncio.gather(*(one() for _ in range(2500)))

    codes = asyncio.run(burst())
    assert codes.count("OK") == len(codes), {c: codes.count(c) for c in set(codes)}
