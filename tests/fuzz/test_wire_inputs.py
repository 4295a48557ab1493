"""Hostile bytes and deadlines on the wire, against one real cluster (a router
and two shard processes): oversized messages, invalid UTF-8 in string fields,
garbage request bodies, 1 ms deadlines on every RPC and in a burst.

Every one must get a status, never a crashed process; afterwards every server
still serves, keeps its counters exact, and its log holds no stack trace
caused by a caller.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from murmur.serving import ROUTER_MAX_REQUEST_BYTES
from murmur.v1 import murmur_pb2 as pb
from murmur.v1 import murmur_pb2_grpc
from tests.fuzz.oracle import ALLOWED, RPCS
from tests.fuzz.support import message_problems
from tests.integration.cluster import LocalCluster

pytestmark = pytest.mark.integration

OK = "OK"
DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED
SERVER_LIMIT = ROUTER_MAX_REQUEST_BYTES  # the router's grpc.max_receive_message_length
UNDER_LIMIT = ROUTER_MAX_REQUEST_BYTES // 2
NORMAL_S = 10.0

# the signature of a request body the server could not parse (gRPC answers for us)
DECODE_FAILURE = "Error parsing message"

# (rpc, number of a string field in its request)
STRING_FIELDS = [
    ("CreateUser", 1),  # handle
    ("CreateUser", 2),  # display_name
    ("CreateUser", 3),  # bio
    ("GetUser", 2),  # handle
    ("UpdateUser", 2),  # display_name
    ("UpdateUser", 3),  # bio
    ("ListFollowers", 3),  # page_token
    ("ListFollowing", 3),  # page_token
    ("PostTweet", 2),  # text
    ("PostTweet", 3),  # request_id
    ("EditTweet", 3),  # text
    ("GetUserTimeline", 3),  # page_token
    ("GetHomeTimeline", 3),  # page_token
]
BAD_UTF8 = [b"\xff\xfe", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"abc\x80def"]


# wire encoding by hand ----------------------------------------------------------------
def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def identity(data: bytes) -> bytes:
    return data


def outcome(call: Callable[[], Any]) -> tuple[Any, str]:
    """(OK or the status code, the message) of one call."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return OK, ""


def pid_alive(pid: int | None) -> bool:
    """Running and not a zombie."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# fixtures -----------------------------------------------------------------------------
class Wire:
    """Stubs on the cluster, and a few users and tweets to aim at."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.channel = grpc.insecure_channel(cluster.target)
        self.stub = murmur_pb2_grpc.MurmurStub(self.channel)
        self.handles = iter(f"w{n}" for n in range(10**6))
        self.alice = self.create().user_id
        self.bob = self.create().user_id
        self.stub.Follow(pb.FollowRequest(follower_id=self.alice, followee_id=self.bob))
        self.tweet = self.post(self.bob).tweet_id

    def create(self) -> pb.User:
        return self.stub.CreateUser(
            pb.CreateUserRequest(handle=next(self.handles)), timeout=NORMAL_S
        )

    def post(self, author: int, text: str = "hello") -> pb.Tweet:
        request = pb.PostTweetRequest(user_id=author, text=text)
        return self.stub.PostTweet(request, timeout=NORMAL_S)

    def raw(self, method: str, service: str = "murmur.v1.Murmur") -> grpc.UnaryUnaryMultiCallable:
        return self.channel.unary_unary(
            f"/{service}/{method}", request_serializer=identity, response_deserializer=identity
        )

    def valid(self, method: str) -> Any:
        """A request of ``method`` that succeeds (each call makes a fresh one)."""
        a, b, t = self.alice, self.bob, self.tweet
        if method == "CreateUser":
            return pb.CreateUserRequest(handle=next(self.handles), display_name="W")
        if method == "EditTweet":
            return pb.EditTweetRequest(tweet_id=t, user_id=b, text="edited")
        if method == "DeleteTweet":
            return pb.DeleteTweetRequest(tweet_id=self.post(a, "doomed").tweet_id, user_id=a)
        return {
            "GetUser": pb.GetUserRequest(user_id=a),
            "UpdateUser": pb.UpdateUserRequest(user_id=a, bio=f"bio {next(self.handles)}"),
            "Follow": pb.FollowRequest(follower_id=a, followee_id=b),
            "Unfollow": pb.UnfollowRequest(follower_id=b, followee_id=a),
            "ListFollowers": pb.ListFollowersRequest(user_id=b),
            "ListFollowing": pb.ListFollowingRequest(user_id=a),
            "PostTweet": pb.PostTweetRequest(
                user_id=a, text="tick", request_id=f"r{next(self.handles)}"
            ),
            "GetTweet": pb.GetTweetRequest(tweet_id=t),
            "GetUserTimeline": pb.GetUserTimelineRequest(user_id=b, page_size=5),
            "GetHomeTimeline": pb.GetHomeTimelineRequest(user_id=a, page_size=5),
            "Ping": pb.PingRequest(user_id=a),
        }[method]

    def assert_serving(self) -> None:
        """Every process runs, and the router and each shard answer a real request."""
        assert pid_alive(self.cluster.router_pid), "the router died"
        for index in range(self.cluster.shards):
            assert self.cluster.shard_alive(index), f"shard {index} died"
            assert self.cluster.shard_info(index).shard_id == index
        assert self.stub.GetUser(pb.GetUserRequest(user_id=self.alice), timeout=NORMAL_S).user_id
        assert self.stub.GetUser(pb.GetUserRequest(user_id=self.bob), timeout=NORMAL_S).user_id
        self.stub.Ping(pb.PingRequest(), timeout=NORMAL_S)

    def close(self) -> None:
        self.channel.close()


@pytest.fixture(scope="module")
def wire(wire_cluster: LocalCluster) -> Iterator[Wire]:
    connected = Wire(wire_cluster)
    yield connected
    connected.close()


# 1. messages over the size limit ------------------------------------------------------
def test_message_over_the_size_limit_is_resource_exhausted(wire):
    text = "x" * SERVER_LIMIT  # and the other fields
    code, message = outcome(
        lambda: wire.stub.PostTweet(pb.PostTweetRequest(user_id=wire.alice, text=text), timeout=60)
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, message)
    assert str(SERVER_LIMIT) in message and not message_problems(message), message
    wire.assert_serving()


def test_large_message_under_the_limit_is_refused_by_field(wire):
    """Half a megabyte passes gRPC's limit; the router refuses it by field, without echoing it
    (and without normalising it: a text over 4 x 280 cannot fit)."""
    for request, method, field in [
        (pb.PostTweetRequest(user_id=wire.alice, text="y" * UNDER_LIMIT), "PostTweet", "text"),
        (pb.CreateUserRequest(handle="h" * UNDER_LIMIT), "CreateUser", "handle"),
        (pb.CreateUserRequest(handle="okhandle", bio="b" * UNDER_LIMIT), "CreateUser", "bio"),
        (
            pb.GetHomeTimelineRequest(user_id=wire.alice, page_token="A" * UNDER_LIMIT),
            "GetHomeTimeline",
            "page_token",
        ),
    ]:
        code, message = outcome(lambda r=request, m=method: getattr(wire.stub, m)(r, timeout=60))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, code, message[:200])
        assert field in message and not message_problems(message), message[:200]
    wire.assert_serving()


# 2. invalid UTF-8 and garbage bytes -----------------------------------------------------
def malformed(wire: Wire, method: str, number: int, payload: bytes) -> bytes:
    """A request whose only fault is string field ``number`` holding ``payload``."""
    others = {
        "GetUser": b"",
        "ListFollowers": varint_field(1, wire.bob),
        "ListFollowing": varint_field(1, wire.alice),
        "PostTweet": varint_field(1, wire.alice),
        "EditTweet": varint_field(1, wire.tweet) + varint_field(2, wire.bob),
        "GetUserTimeline": varint_field(1, wire.bob),
        "GetHomeTimeline": varint_field(1, wire.alice),
    }.get(method, b"")
    if method == "CreateUser" and number != 1:
        others = length_delimited(1, next(wire.handles).encode())
    if method == "PostTweet" and number == 3:
        others += length_delimited(2, b"fine text")
    return others + length_delimited(number, payload)


@pytest.mark.parametrize(("method", "number"), STRING_FIELDS)
def test_invalid_utf8_in_a_string_field_does_not_crash(wire, method, number):
    for payload in BAD_UTF8:
        body = malformed(wire, method, number, payload)
        code, message = outcome(lambda b=body: wire.raw(method)(b, timeout=NORMAL_S))
        # gRPC itself refuses a body it cannot parse; the servicer never sees it
        assert code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNKNOWN,
        ), (payload, code, message)
    wire.assert_serving()


def test_invalid_utf8_is_a_precise_invalid_argument(wire):
    failures = []
    for method, number in STRING_FIELDS:
        body = malformed(wire, method, number, b"\xff\xfe")
        code, message = outcome(lambda b=body, m=method: wire.raw(m)(b, timeout=NORMAL_S))
        rpc = pb.DESCRIPTOR.services_by_name["Murmur"].methods_by_name[method]
        field = rpc.input_type.fields_by_number[number].name
        named = f"field {field} of " in (message or "") and "not valid UTF-8" in (message or "")
        if code != grpc.StatusCode.INVALID_ARGUMENT or message_problems(message) or not named:
            failures.append(f"{method} field {number}: {code}: {message!r}")
    assert not failures, "\n".join(failures)


def test_garbage_bytes_get_a_status_not_a_crash(wire):
    rng = random.Random(20261125)
    seen: Counter = Counter()
    problems = []
    for method in RPCS:
        for _ in range(20):
            body = rng.randbytes(rng.randint(1, 64))
            code, message = outcome(lambda b=body, m=method: wire.raw(m)(b, timeout=NORMAL_S))
            seen[code] += 1
            if code == grpc.StatusCode.INVALID_ARGUMENT and "is not a valid" in message:
                continue  # a body that does not parse, on any RPC
            if code != OK and (code not in ALLOWED[method] or message_problems(message)):
                problems.append(f"{method}({body!r}) -> {code}: {message!r}")
    assert not problems, "\n".join(problems[:10])
    parsed = sum(n for code, n in seen.items() if code != grpc.StatusCode.UNKNOWN)
    assert parsed, f"no garbage body reached a servicer: {seen}"
    wire.assert_serving()


def test_unknown_and_mistyped_fields(wire):
    get_alice = varint_field(1, wire.alice)
    extras = {
        "unknown varint": varint_field(99, 7),
        "unknown bytes": length_delimited(100, b"\xff\xfe anything"),
        "unknown huge field number": varint_field((1 << 29) - 1, 1),
    }
    for name, extra in extras.items():
        reply = wire.raw("GetUser")(get_alice + extra, timeout=NORMAL_S)
        assert pb.User.FromString(reply).user_id == wire.alice, name
    # tweet_id sent as a string: proto3 treats it as an unknown field, so tweet_id is 0
    code, message = outcome(
        lambda: wire.raw("GetTweet")(length_delimited(1, b"123"), timeout=NORMAL_S)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tweet_id" in message, (code, message)
    # a varint that runs past 64 bits
    code, _ = outcome(lambda: wire.raw("GetTweet")(b"\x08" + b"\xff" * 11, timeout=NORMAL_S))
    assert code != OK
    wire.assert_serving()


def test_shards_survive_garbage_on_their_own_port(wire):
    """The Shard service is not for clients, but a stray caller must not kill it."""
    rng = random.Random(7)
    for index in range(wire.cluster.shards):
        with grpc.insecure_channel(wire.cluster.shard_address(index)) as channel:
            for method in ("GetUsers", "Deliver", "Execute", "PullTimelines", "ReadInbox"):
                call = channel.unary_unary(
                    f"/murmur.v1.Shard/{method}",
                    request_serializer=identity,
                    response_deserializer=identity,
                )
                for body in (b"\xff" * 8, rng.randbytes(32), length_delimited(1, b"\xff\xfe")):
                    outcome(lambda c=call, b=body: c(b, timeout=NORMAL_S))
    wire.assert_serving()


def test_concurrent_refusals_each_get_their_own_status(wire):
    """Concurrent requests to one shard travel in one coalesced batch: each must
    still get its own code and message, not a neighbour's."""
    missing = iter(range(10**12, 10**12 + 1000))
    not_mine = pb.EditTweetRequest(tweet_id=wire.tweet, user_id=wire.alice, text="x")

    def cases() -> list[tuple[str, Any, Any, str]]:
        m1, m2, m3, m4 = next(missing), next(missing), next(missing), next(missing)
        return [
            ("GetUser", pb.GetUserRequest(user_id=m1), grpc.StatusCode.NOT_FOUND, str(m1)),
            ("GetUser", pb.GetUserRequest(user_id=wire.alice), OK, ""),
            ("EditTweet", not_mine, grpc.StatusCode.PERMISSION_DENIED, str(wire.tweet)),
            (
                "PostTweet",
                pb.PostTweetRequest(user_id=m2, text="hi"),
                grpc.StatusCode.NOT_FOUND,
                str(m2),
            ),
            (
                "Follow",
                pb.FollowRequest(follower_id=m3, followee_id=wire.alice),
                grpc.StatusCode.NOT_FOUND,
                str(m3),
            ),
            (
                "ListFollowers",
                pb.ListFollowersRequest(user_id=m4),
                grpc.StatusCode.NOT_FOUND,
                str(m4),
            ),
            ("GetTweet", pb.GetTweetRequest(tweet_id=wire.tweet), OK, ""),
            (
                "GetTweet",
                pb.GetTweetRequest(tweet_id=wire.tweet + 1),
                grpc.StatusCode.NOT_FOUND,
                str(wire.tweet + 1),
            ),
            (
                "PostTweet",
                pb.PostTweetRequest(user_id=wire.alice, text="x" * 281),
                grpc.StatusCode.INVALID_ARGUMENT,
                "text",
            ),
        ]

    plan = [case for _ in range(12) for case in cases()]

    async def run() -> list[Any]:
        async with grpc.aio.insecure_channel(wire.cluster.target) as channel:
            stub = murmur_pb2_grpc.MurmurStub(channel)
            await stub.Ping(pb.PingRequest(), timeout=NORMAL_S)
            return await asyncio.gather(
                *(getattr(stub, m)(r, timeout=NORMAL_S) for m, r, _, _ in plan),
                return_exceptions=True,
            )

    wrong = []
    for (method, _, code, needle), result in zip(plan, asyncio.run(run()), strict=True):
        got = result.code() if isinstance(result, grpc.aio.AioRpcError) else OK
        message = result.details() if isinstance(result, grpc.aio.AioRpcError) else ""
        if got != code or needle not in (message or ""):
            wrong.append(f"{method}: expected {code} naming {needle!r}, got {got}: {message!r}")
    assert not wrong, "\n".join(wrong[:10])


# 3. deadlines of 1 ms -------------------------------------------------------------------
@pytest.mark.parametrize("method", RPCS)
def test_one_ms_deadline(wire, method):
    call = getattr(wire.stub, method)
    call(wire.valid(method), timeout=NORMAL_S)  # warm: the channel is connected
    for _ in range(5):
        code, message = outcome(lambda: call(wire.valid(method), timeout=0.001))
        assert code in (OK, DEADLINE), (code, message)
        assert not message_problems(message, allow_empty=True), message
    code, message = outcome(lambda: call(wire.valid(method), timeout=NORMAL_S))
    assert code == OK, (code, message)


def mixed_requests(wire: Wire, count: int) -> list[tuple[str, Any]]:
    reads = [
        "GetUser",
        "ListFollowers",
        "ListFollowing",
        "GetTweet",
        "GetUserTimeline",
        "GetHomeTimeline",
        "Ping",
    ]
    writes = ["Follow", "Unfollow", "PostTweet", "EditTweet"]
    methods = reads + writes
    return [(m, wire.valid(m)) for m in (methods[i % len(methods)] for i in range(count))]


def test_burst_of_200_one_ms_deadlines_then_normal_traffic(wire):
    burst = mixed_requests(wire, 200)
    after = mixed_requests(wire, 40)

    async def run() -> tuple[Counter, list[str]]:
        async with grpc.aio.insecure_channel(wire.cluster.target) as channel:
            stub = murmur_pb2_grpc.MurmurStub(channel)
            await stub.Ping(pb.PingRequest(), timeout=NORMAL_S)
            results = await asyncio.gather(
                *(getattr(stub, m)(r, timeout=0.001) for m, r in burst), return_exceptions=True
            )
            codes: Counter = Counter()
            failures = []
            for (method, _), result in zip(burst, results, strict=True):
                if isinstance(result, grpc.aio.AioRpcError):
                    codes[result.code()] += 1
                    details = result.details() or ""
                    if result.code() != DEADLINE or message_problems(details, allow_empty=True):
                        failures.append(f"burst {method}: {result.code()}: {result.details()}")
                elif isinstance(result, BaseException):
                    failures.append(f"burst {method}: {result!r}")
                else:
                    codes[OK] += 1
            for method, request in after:  # right away, one by one, normal deadlines
                try:
                    await getattr(stub, method)(request, timeout=NORMAL_S)
                except grpc.aio.AioRpcError as exc:
                    failures.append(f"after {method}: {exc.code()}: {exc.details()}")
            return codes, failures

    codes, failures = asyncio.run(run())
    assert not failures, (codes, failures)
    wire.assert_serving()


def test_counters_stay_exact_when_deadlines_cut_writes_short(wire):
    """Writes whose deadline ran out may or may not have happened, but never half:
    once fan-out settles every counter equals the real count, and every home
    timeline equals the join of the follow graph and the user timelines."""
    users = [wire.create().user_id for _ in range(6)]
    rng = random.Random(99)
    deadlines = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]
    mine: dict[int, list[int]] = {u: [wire.post(u, "first").tweet_id] for u in users}

    def write() -> tuple[str, Any]:
        a, b = rng.sample(users, 2)
        kind = rng.choice(["follow", "follow", "unfollow", "post", "delete"])
        if kind == "follow":
            return "Follow", pb.FollowRequest(follower_id=a, followee_id=b)
        if kind == "unfollow":
            return "Unfollow", pb.UnfollowRequest(follower_id=a, followee_id=b)
        if kind == "post":
            return "PostTweet", pb.PostTweetRequest(user_id=a, text=f"t{rng.random()}")
        return "DeleteTweet", pb.DeleteTweetRequest(tweet_id=rng.choice(mine[a]), user_id=a)

    async def run() -> Counter:
        codes: Counter = Counter()
        async with grpc.aio.insecure_channel(wire.cluster.target) as channel:
            stub = murmur_pb2_grpc.MurmurStub(channel)
            await stub.Ping(pb.PingRequest(), timeout=NORMAL_S)
            for _ in range(6):
                wave = [write() for _ in range(50)]
                results = await asyncio.gather(
                    *(getattr(stub, m)(r, timeout=rng.choice(deadlines)) for m, r in wave),
                    return_exceptions=True,
                )
                for result in results:
                    code = result.code() if isinstance(result, grpc.aio.AioRpcError) else OK
                    codes[code] += 1
                    if isinstance(result, pb.Tweet):
                        mine[result.user_id].append(result.tweet_id)
        return codes

    codes = asyncio.run(run())
    assert set(codes) <= {OK, DEADLINE, grpc.StatusCode.NOT_FOUND}, codes  # NOT_FOUND: deleted
    stub = wire.stub

    def listing(method: str, user_id: int) -> list[int]:
        message = getattr(pb, f"{method}Request")(user_id=user_id, page_size=200)
        page = getattr(stub, method)(message, timeout=NORMAL_S)
        assert not page.next_page_token
        if method.startswith("List"):
            return [u.user_id for u in page.users]
        return [t.tweet_id for t in page.tweets]

    def consistent() -> list[str]:
        wrong = []
        following = {u: set(listing("ListFollowing", u)) for u in users}
        own = {u: listing("GetUserTimeline", u) for u in users}
        for u in users:
            user = stub.GetUser(pb.GetUserRequest(user_id=u), timeout=NORMAL_S)
            followers = {a for a in users if u in following[a]}
            if set(listing("ListFollowers", u)) != followers:
                wrong.append(f"followers of {u}")
            counted = (user.follower_count, user.following_count, user.tweet_count)
            if counted != (len(followers), len(following[u]), len(own[u])):
                wrong.append(f"counters of {u}: {counted}")
            join = sorted({t for a in (u, *following[u]) for t in own[a]}, reverse=True)
            if listing("GetHomeTimeline", u) != join:
                wrong.append(f"home timeline of {u}")
        return wrong

    deadline = time.monotonic() + 20
    while (wrong := consistent()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not wrong, wrong
    wire.assert_serving()


# 4. afterwards: alive, and logs without stack traces from callers ------------------------
TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d |=====)")


def tracebacks(log: str) -> list[str]:
    """Each stack trace in a log (chained ones included), with the log line
    that introduced it."""
    lines = log.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("Traceback (most recent call last)"):
            i += 1
            continue
        start = i - 1 if i > 0 and TIMESTAMP.match(lines[i - 1]) else i
        end = i + 1
        while end < len(lines) and not TIMESTAMP.match(lines[end]):
            end += 1
        blocks.append("\n".join(lines[start:end]))
        i = end
    return blocks


def is_parse_failure(block: str) -> bool:
    """gRPC's own log of a request body it could not deserialize."""
    return "DecodeError" in block and "deserialize" in block


def is_late_answer(block: str) -> bool:
    """gRPC's own log of an answer (a response, or the status ``rpc`` aborts with)
    that it could not send because the caller's deadline had already ended the
    call. A race: it shows up in about two runs of this module out of three."""
    return "ExecuteBatchError raised in core" in block


@pytest.fixture(scope="module")
def stopped_logs(wire: Wire, wire_cluster: LocalCluster) -> dict[str, str]:
    """Stop the cluster (it must exit cleanly) and read every process's log.

    Sends one unparseable request first, so the log tests mean the same thing
    when run alone."""
    outcome(lambda: wire.raw("CreateUser")(b"\x0a\x02\xff\xfe", timeout=NORMAL_S))
    wire.assert_serving()
    codes = wire_cluster.stop()
    assert all(code == 0 for code in codes.values()), f"exit codes after SIGTERM: {codes}"
    return {
        path.name: path.read_text(errors="replace")
        for path in sorted(wire_cluster.tmp_path.glob("*.log"))
    }


def test_every_process_survived(wire):
    wire.assert_serving()


def test_logs_hold_no_stack_trace_from_a_caller(stopped_logs):
    """Known and reported: parse failures (strict xfail below) and late answers
    (a timing race, so it cannot be a strict xfail: it is reported as a warning)."""
    blocks = [(name, block) for name, log in stopped_logs.items() for block in tracebacks(log)]
    late = [f"{name}: {block.splitlines()[0]}" for name, block in blocks if is_late_answer(block)]
    if late:
        warnings.warn(
            "bug: gRPC logged ExecuteBatchError with a stack trace for answers to callers "
            f"whose 1 ms deadline had already passed ({len(late)}): " + "; ".join(late[:3]),
            stacklevel=1,
        )
    unexpected = [
        f"{name}:\n{block}"
        for name, block in blocks
        if not is_parse_failure(block) and not is_late_answer(block)
    ]
    assert not unexpected, "\n\n".join(unexpected[:5])


def test_unparseable_requests_leave_no_stack_trace_in_logs(stopped_logs):
    parse_failures = [
        f"{name}:\n{block}"
        for name, log in stopped_logs.items()
        for block in tracebacks(log)
        if is_parse_failure(block)
    ]
    assert not parse_failures, f"{len(parse_failures)} stack traces, first:\n{parse_failures[0]}"
