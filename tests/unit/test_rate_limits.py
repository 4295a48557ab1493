"""Per-user rate limits: the GCRA budget itself (on a fake clock), the shard
servicer charging only writes that happen, the RetryInfo every gRPC client
library reads, and the settings that hold the limits across restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from grpc_status import rpc_status
from prometheus_client import generate_latest

from murmur.errors import ServiceError
from murmur.retry_info import DETAILS_KEY, retry_after, retry_trailer
from murmur.slots import even_assignment
from murmur.v1 import murmur_pb2, shard_pb2
from server.admin import _settings_ignored
from server.shard_pool import ShardPool
from server.slot_map import RoutingTable
from shard import keys
from shard.batch_execute import run_call
from shard.main import parse_args
from shard.rate_limits import MIN_PRUNE_SIZE, REFUSED, UserRateLimiter
from shard.settings import ShardSettings, check_update
from shard.state import ShardState
from tests.unit import test_shard_servicer as harness

Shard = harness.Shard
open_shard, shard = harness.open_shard, harness.shard  # the servicer tests' fixtures

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


class FakeClock:
    """Nanoseconds, like ``time.monotonic_ns``; moved in seconds by ``advance``."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now = round(start_s * 1e9)

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * 1e9)


def limiter(clock: FakeClock) -> UserRateLimiter:
    return UserRateLimiter("post_rate_limit", clock=clock)


def charge(limits: UserRateLimiter, user: int, limit: int) -> None:
    limits.spend(limits.admit(user, limit))


def refusal(limits: UserRateLimiter, user: int, limit: int) -> ServiceError:
    with pytest.raises(ServiceError) as refused:
        limits.admit(user, limit)
    return refused.value


# the budget ----------------------------------------------------------------


def test_a_burst_of_the_limit_passes_then_one_per_interval() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    for _ in range(60):
        charge(limits, 7, 60)
    error = refusal(limits, 7, 60)
    assert error.code is EXHAUSTED
    assert error.retry_after == pytest.approx(1.0)
    assert error.message == (
        "user 7 is over post_rate_limit: at most 60 posts and edits per user per minute; "
        "retry in 1.0 s"
    )
    clock.advance(0.99)
    assert refusal(limits, 7, 60).retry_after == pytest.approx(0.01)
    clock.advance(0.01)
    charge(limits, 7, 60)  # waiting what it said lets exactly one more through
    refusal(limits, 7, 60)


def test_refusals_are_counted_for_operators_by_setting() -> None:
    """murmur_rate_limited_total{setting=...}: which limit callers meet."""
    posts, follows = REFUSED.labels("post_rate_limit"), REFUSED.labels("follow_rate_limit")
    before = (posts.value, follows.value)
    limits = limiter(FakeClock())
    charge(limits, 1, 1)
    refusal(limits, 1, 1)
    refusal(limits, 1, 1)
    assert (posts.value, follows.value) == (before[0] + 2, before[1])
    text = generate_latest().decode()
    assert 'murmur_rate_limited_total{setting="post_rate_limit"}' in text


def test_users_have_their_own_budgets_and_an_idle_minute_refills_one() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    for _ in range(3):
        charge(limits, 1, 3)
    refusal(limits, 1, 3)
    charge(limits, 2, 3)  # another user is untouched
    clock.advance(60)
    for _ in range(3):
        charge(limits, 1, 3)
    refusal(limits, 1, 3)


@pytest.mark.parametrize(
    ("limit", "clock_s"), [(1_000, 1e8), (99_999, 1e7), (1_000_000, 1e7), (7, 3e9), (300, 0)]
)
def test_a_burst_is_exactly_the_limit_at_any_clock(limit: int, clock_s: float) -> None:
    """Float seconds summed interval by interval let 999 or 1,000,007
    through for these; nanoseconds are exact."""
    limits = limiter(FakeClock(clock_s))
    for _ in range(limit):
        charge(limits, 1, limit)
    refusal(limits, 1, limit)


def test_a_write_admitted_but_not_spent_costs_nothing() -> None:
    limits = limiter(FakeClock())
    for _ in range(5):
        limits.admit(1, 1)  # each write failed before it was committed
    charge(limits, 1, 1)
    refusal(limits, 1, 1)


def test_no_limit_is_never_refused_and_keeps_no_state() -> None:
    limits = limiter(FakeClock())
    for _ in range(10_000):
        charge(limits, 1, 0)
    assert len(limits) == 0


def test_users_whose_budget_refilled_are_forgotten() -> None:
    """Memory follows the users active in the last minute, not every user
    ever seen."""
    clock = FakeClock()
    limits = limiter(clock)
    for user in range(MIN_PRUNE_SIZE - 1):
        charge(limits, user + 1, 100)
    clock.advance(61)
    charge(limits, MIN_PRUNE_SIZE, 100)  # the table reaches the prune size
    assert len(limits) == 1
    charge(limits, 1, 100)
    assert len(limits) == 2


# RetryInfo -----------------------------------------------------------------


def test_retry_info_is_read_back_by_our_client_and_by_grpcio_status() -> None:
    key, value = retry_trailer(EXHAUSTED, "slow down", 1.25)
    assert key == DETAILS_KEY == "grpc-status-details-bin"
    assert retry_after([("other", "x"), (key, value)]) == pytest.approx(1.25)
    call = SimpleNamespace(
        code=lambda: EXHAUSTED,
        details=lambda: "slow down",
        trailing_metadata=lambda: ((key, value),),
    )
    status = rpc_status.from_call(call)  # checks code and message match the call's
    assert status is not None and status.message == "slow down"
    assert status.code == EXHAUSTED.value[0]


def test_trailers_without_retry_info_say_nothing() -> None:
    assert retry_after(None) is None
    assert retry_after([("murmur-wrong-slot", "12")]) is None
    assert retry_after([(DETAILS_KEY, b"\xff not a status")]) is None


# the shard servicer --------------------------------------------------------


def slow_clock(shard: Shard) -> FakeClock:
    """Both of a shard's budgets on one clock that moves only when told."""
    clock = FakeClock()
    shard.servicer.post_limits.clock = clock
    shard.servicer.follow_limits.clock = clock
    return clock


def post_request(author: int, text: str = "hi", request_id: str = ""):
    return murmur_pb2.PostTweetRequest(user_id=author, text=text, request_id=request_id)


def test_posts_over_the_limit_are_refused_with_retry_info_and_change_nothing(
    open_shard: Callable[..., Shard],
) -> None:
    shard = open_shard(post_rate_limit=2)
    clock = slow_clock(shard)
    author = shard.create_user("poster")
    first = shard.post(author, "one", request_id="r1")
    shard.post(author, "two")
    queued = len(shard.outbox())
    _, trailing, code, details = shard.call("PostTweet", post_request(author, "three"))
    assert code is EXHAUSTED
    assert details.startswith(f"user {author} is over post_rate_limit: at most 2 posts")
    assert retry_after(trailing.items()) == pytest.approx(30.0)
    assert shard.user(author).user.tweet_count == 2
    assert len(shard.outbox()) == queued
    assert len(shard.inbox_ids(author)) == 2
    # a retry of a post already made is answered, not counted nor refused
    assert shard.post(author, "one", request_id="r1") == first
    clock.advance(30)
    shard.post(author, "three")
    assert shard.user(author).user.tweet_count == 3


def test_a_post_the_disk_refuses_spends_no_budget(
    open_shard: Callable[..., Shard], monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = open_shard(post_rate_limit=2)
    slow_clock(shard)
    author = shard.create_user("unlucky")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shard.state.store.db, "write_all", disk_full, raising=False)
    for n in range(3):
        _, _, code, details = shard.call("PostTweet", post_request(author, f"lost {n}"))
        assert code is not grpc.StatusCode.OK and "post_rate_limit" not in details
    assert len(shard.servicer.post_limits) == 0


def test_an_edit_fans_out_again_and_counts_like_a_post(open_shard: Callable[..., Shard]) -> None:
    shard = open_shard(post_rate_limit=2)
    slow_clock(shard)
    author = shard.create_user("editor")
    tweet = shard.post(author, "first")
    edit = murmur_pb2.EditTweetRequest(tweet_id=tweet.tweet_id, user_id=author, text="second")
    shard.ok("EditTweet", edit)
    queued = len(shard.outbox())
    edit.text = "third"
    details = shard.fails("EditTweet", edit, EXHAUSTED)
    assert details.startswith(f"user {author} is over post_rate_limit: at most 2 posts and edits")
    assert len(shard.outbox()) == queued
    stored = shard.ok("GetTweets", shard_pb2.GetTweetsRequest(tweet_ids=[tweet.tweet_id]))
    assert stored.tweets[0].text == "second"
    delete = murmur_pb2.DeleteTweetRequest(tweet_id=tweet.tweet_id, user_id=author)
    shard.ok("DeleteTweet", delete)  # deletes are never refused


def test_only_follow_changes_count_against_the_follow_limit(
    open_shard: Callable[..., Shard],
) -> None:
    shard = open_shard(follow_rate_limit=2)
    slow_clock(shard)
    fan = shard.create_user("fan")
    a, b, c = (shard.create_user(name) for name in ("a", "b", "c"))
    shard.follow(fan, a)
    shard.follow(fan, a)  # already following: no change, not counted
    shard.ok("Unfollow", murmur_pb2.UnfollowRequest(follower_id=fan, followee_id=c))  # no-op
    shard.ok("Unfollow", murmur_pb2.UnfollowRequest(follower_id=fan, followee_id=a))
    request = shard_pb2.ShardFollowRequest(follower_id=fan, followee_id=b)
    details = shard.fails("Follow", request, EXHAUSTED)
    assert details.startswith(
        f"user {fan} is over follow_rate_limit: at most 2 follows and unfollows"
    )
    assert shard.edges(fan, shard_pb2.FOLLOWING) == []
    assert shard.user(fan).user.following_count == 0
    shard.follow(a, b)  # another follower's budget is its own


def test_a_refusal_inside_execute_carries_its_wait(open_shard: Callable[..., Shard]) -> None:
    """The router's coalesced calls reach the shard as Execute batches: the
    wait must survive the batch to reach the caller."""
    shard = open_shard(post_rate_limit=1)
    slow_clock(shard)
    author = shard.create_user("batched")
    shard.post(author)
    call = shard_pb2.ShardCall(method="PostTweet", request=post_request(author).SerializeToString())
    result = asyncio.run(run_call(shard.servicer, call, None))
    assert result.code == EXHAUSTED.value[0]
    assert result.retry_after_ms == 60_000
    assert "post_rate_limit" in result.message


def test_update_settings_changes_the_limit_at_once(shard: Shard) -> None:
    slow_clock(shard)
    author = shard.create_user("later")
    shard.ok("UpdateSettings", shard_pb2.UpdateSettingsRequest(post_rate_limit=1))
    shard.post(author)
    shard.fails("PostTweet", post_request(author), EXHAUSTED)
    settings = shard.ok("UpdateSettings", shard_pb2.UpdateSettingsRequest(post_rate_limit=0))
    assert (settings.post_rate_limit, settings.follow_rate_limit) == (0, 300)
    shard.post(author)


# settings ------------------------------------------------------------------


def test_limits_are_stored_and_settings_from_before_them_take_the_default(
    tmp_path: Path,
) -> None:
    state = ShardState.open(str(tmp_path / "a"), shard_id=0, overrides={"post_rate_limit": 0})
    state.store.close()
    again = ShardState.open(str(tmp_path / "a"), shard_id=0)
    assert (again.settings.post_rate_limit, again.settings.follow_rate_limit) == (0, 300)
    # settings stored by a shard from before the limits existed
    old = shard_pb2.Settings(celebrity_threshold=5, inbox_cap=50, backfill_limit=7)
    again.store.db.put(keys.shard_meta("settings"), old.SerializeToString(), sync=True)
    again.store.close()
    upgraded = ShardState.open(str(tmp_path / "a"), shard_id=0)
    assert upgraded.settings == ShardSettings(celebrity_threshold=5, inbox_cap=50, backfill_limit=7)
    upgraded.store.close()


def test_limit_flags_and_updates_are_checked() -> None:
    args = parse_args(["--data-dir", "x", "--post-rate-limit", "0", "--follow-rate-limit", "9"])
    assert (args.post_rate_limit, args.follow_rate_limit) == (0, 9)
    with pytest.raises(ValueError, match="follow_rate_limit is 1000001; it must be 0-1000000"):
        check_update(shard_pb2.UpdateSettingsRequest(follow_rate_limit=1_000_001))


def test_a_plain_shard_call_refused_by_a_limit_keeps_its_wait_in_the_router() -> None:
    """Writes travel in batches, but a call the router makes alone (no
    coalescing) must carry the wait back too."""
    table = RoutingTable(
        shard_pb2.SlotMap(version=1, addresses={0: "a"}, owners=even_assignment([0]))
    )
    message = "user 5 is over post_rate_limit: at most 1 posts and edits per user per minute"
    trailing = grpc.aio.Metadata(retry_trailer(EXHAUSTED, message, 12.5))
    refused = grpc.aio.AioRpcError(EXHAUSTED, grpc.aio.Metadata(), trailing, message)
    error = ShardPool(table)._translate(0, refused)
    assert (error.code, error.message, error.retry_after) == (EXHAUSTED, message, 12.5)


def test_a_shard_from_before_the_limits_is_named_when_it_skips_them() -> None:
    """An older shard drops fields it does not know and answers OK: the
    router must not report the update as applied there."""
    asked = shard_pb2.UpdateSettingsRequest(inbox_cap=700, post_rate_limit=60)
    new = shard_pb2.Settings(
        celebrity_threshold=10_000, inbox_cap=700, backfill_limit=200, post_rate_limit=60
    )
    old = shard_pb2.Settings(celebrity_threshold=10_000, inbox_cap=700, backfill_limit=200)
    assert _settings_ignored(asked, {0: new, 1: old, 2: new}) == {1: ["post_rate_limit"]}
    unset = shard_pb2.UpdateSettingsRequest(post_rate_limit=0)  # 0 turns a limit off
    assert _settings_ignored(unset, {0: shard_pb2.Settings(post_rate_limit=0), 1: old}) == {
        1: ["post_rate_limit"]
    }
    assert _settings_ignored(shard_pb2.UpdateSettingsRequest(inbox_cap=700), {1: old}) == {}
