"""Calls from the router to shards: coalesced, deadlines carried, failures named.

Coalescing: each shard has one lane with at most one batch in flight.
Requests that arrive meanwhile queue, and when the batch returns everything
queued goes as the next one (within a bound on the message's size). There
is no timer, so a lone request goes at once, alone; under load batches grow
by themselves, like group commit, and one round trip serves many requests.
Batches travel as messages on one long-lived stream per shard
(``murmur/execute_stream.py``), far cheaper for both ends than a unary call
each.

Every call carries the caller's remaining deadline (or a default when the
caller set none), and a shard that does not answer becomes UNAVAILABLE or
DEADLINE_EXCEEDED naming that shard, so users on other shards keep working
and the caller knows whom to blame.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory

from murmur.errors import WRONG_SLOT_METADATA, ServiceError
from murmur.execute_stream import STATUS_BY_NUMBER
from murmur.loop_metrics import LoopHistogram
from murmur.retry_info import retry_after
from murmur.shard_stubs import ShardStubs
from murmur.v1 import murmur_pb2, shard_pb2, shard_pb2_grpc
from murmur.validation import MAX_PER_AUTHOR_TWEETS
from server.slot_map import RoutingTable, newest_map

log = logging.getLogger("murmur.router.shards")
_SERVICE = shard_pb2.DESCRIPTOR.services_by_name["Shard"]
RESPONSE_TYPES = {
    method.name: message_factory.GetMessageClass(method.output_type) for method in _SERVICE.methods
}
# Ping is the benchmark's floor: exactly one router -> shard call per request.
NOT_COALESCED = {"Execute", "AssignSlots", "UpdateSettings", "GetShardInfo", "Ping"}
BATCH_SIZE = LoopHistogram(
    "murmur_router_shard_batch_requests",
    "Requests carried per router-to-shard call (coalescing)",
    ["shard"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)

# One batch is one message each way, so it is bounded: by count, and by the
# tweets its answers may hold (a request's page size, or a per-author pull's
# depth times its authors). The tweet budget is what one per-author pull may
# carry (``copies_per_call`` keeps each pull under it); at ~1.2 kB for the
# longest tweet that stays well under the 64 MB message limit, where an
# unbounded queue behind a slow shard would fail whole batches with
# RESOURCE_EXHAUSTED. A request over the budget on its own goes alone.
MAX_BATCH_CALLS = 128
MAX_BATCH_TWEETS = MAX_PER_AUTHOR_TWEETS

DEFAULT_TIMEOUT_S = 10.0
MAX_DEADLINE_MARGIN_S = 0.25
PROBE_TIMEOUT_S = 0.5
PROBE_INTERVAL_S = 0.5
# while a shard is silent, re-read the slot map this often: it may have been
# drained and removed (or its slots moved) through another router
MAP_CHECK_INTERVAL_S = 2.0


def shard_timeout(remaining: float | None) -> float:
    """How long to wait for a shard: the caller's time less a tenth (at most
    0.25 s), so that a shard that does not answer reaches the caller as this
    router's DEADLINE_EXCEEDED naming it, not as the caller's own deadline."""
    if remaining is None:
        return DEFAULT_TIMEOUT_S
    return max(0.0, remaining - min(MAX_DEADLINE_MARGIN_S, remaining * 0.1))


class WrongSlot(ServiceError):
    """The shard no longer owns the slot: the routing table is stale."""


@dataclass
class Pending:
    method: str
    request: Any
    future: asyncio.Future
    deadline: float
    expiry: asyncio.TimerHandle | None = None

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def answer_tweets(self) -> int:
        """The most tweets this request's answer may carry."""
        request = self.request
        if self.method == "PullTimelines" and request.per_author:
            return request.limit * len(request.author_ids)
        if self.method in ("PullTimelines", "ReadInbox"):
            return request.limit
        return 0


# What gRPC's transport says, as INTERNAL, when a connection drops under a
# call (a shard killed or restarted mid-call): retryable, as UNAVAILABLE is,
# and unlike INTERNAL, which clients take for a bug and do not retry.
BROKEN_TRANSPORT = (
    "RST_STREAM",
    "Stream removed",
    "GOAWAY",
    "Socket closed",
    "Connection reset",
    "Broken pipe",
    "Transport closed",
)


def broken_transport(details: str) -> bool:
    return any(sign in details for sign in BROKEN_TRANSPORT)


class ShardLane:
    """One shard's queue: one call in flight, the rest wait and go together."""

    def __init__(self, pool: ShardPool, shard_id: int) -> None:
        self.pool = pool
        self.shard_id = shard_id
        self.pending: list[Pending] = []
        self.busy = False
        self.calls = 0
        self.batched_requests = 0
        self.batch_sizes = BATCH_SIZE.labels(str(shard_id))

    async def submit(self, method: str, request: Any, timeout: float) -> Any:
        if self.shard_id in self.pool.suspect:  # don't queue behind a call to a silent shard
            return await self.pool.direct(self.shard_id, method, request, timeout)
        loop = asyncio.get_running_loop()
        item = Pending(method, request, loop.create_future(), time.monotonic() + timeout)
        # a plain timer rather than asyncio.timeout(), whose context manager
        # cost ~12% of the router's instructions for a home read
        item.expiry = loop.call_later(timeout, self._expire, item)
        self.pending.append(item)
        if not self.busy:
            self.busy = True
            loop.create_task(self._drain())
        return await item.future

    def _expire(self, item: Pending) -> None:
        _settle(
            item,
            error=ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{self.pool.describe(self.shard_id)} did not answer within the deadline",
            ),
        )

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch = self._next_batch()
                if not batch:
                    continue
                self.calls += 1
                self.batched_requests += len(batch)
                self.batch_sizes.observe(len(batch))
                await self._send(batch)
        finally:
            self.busy = False

    def _next_batch(self) -> list[Pending]:
        """The oldest waiting requests, within MAX_BATCH_CALLS and
        MAX_BATCH_TWEETS (always at least one); the rest wait for the next
        batch. Requests whose callers gave up are dropped."""
        live = [item for item in self.pending if not item.future.done()]
        taken, tweets = 0, 0
        for item in live[:MAX_BATCH_CALLS]:
            tweets += item.answer_tweets()
            if taken and tweets > MAX_BATCH_TWEETS:
                break
            taken += 1
        batch, self.pending = live[:taken], live[taken:]
        return batch

    async def _send(self, batch: list[Pending]) -> None:
        calls = [
            shard_pb2.ShardCall(method=item.method, request=item.request.SerializeToString())
            for item in batch
        ]
        timeout = max(item.remaining() for item in batch)
        try:
            results = await self.pool.execute(self.shard_id, calls, timeout)
        except Exception as exc:
            if not isinstance(exc, ServiceError):  # never leave a batch waiting for its timers
                log.exception("batch to %s failed", self.pool.describe(self.shard_id))
                exc = ServiceError(
                    grpc.StatusCode.INTERNAL,
                    f"internal error in the router calling {self.pool.describe(self.shard_id)}",
                )
            for item in batch:
                _settle(item, error=exc)
            return
        for item, result in zip(batch, results, strict=True):
            if result.code == 0:
                _settle(item, result=RESPONSE_TYPES[item.method].FromString(result.response))
            else:
                code = STATUS_BY_NUMBER.get(result.code, grpc.StatusCode.UNKNOWN)
                if result.wrong_slot:
                    error = WrongSlot(code, result.message)
                else:
                    error = ServiceError(code, result.message, retry_after=_seconds(result))
                _settle(item, error=error)


def _seconds(result: shard_pb2.ShardCallResult) -> float | None:
    return result.retry_after_ms / 1000 if result.retry_after_ms else None


def _settle(item: Pending, result: Any = None, error: BaseException | None = None) -> None:
    if item.expiry is not None:
        item.expiry.cancel()
    if item.future.done():  # expired, or its caller went away
        return
    if error is not None:
        item.future.set_exception(error)
    else:
        item.future.set_result(result)


class ShardPool:
    def __init__(self, table: RoutingTable, coalesce: bool = True) -> None:
        self.table = table
        self.coalesce = coalesce
        self._stubs = ShardStubs()
        self.lanes: dict[int, ShardLane] = {}
        self.suspect: set[int] = set()
        self._probes: dict[int, asyncio.Task] = {}
        self._refresh_lock = asyncio.Lock()
        # refreshes begun, and the latest begun that finished: a caller may
        # only rely on a refresh that began after it found the map stale
        self._refreshes_begun = 0
        self._refreshed_through = 0

    def describe(self, shard_id: int) -> str:
        return f"shard {shard_id} ({self.table.addresses.get(shard_id, 'no address')})"

    def stub(self, shard_id: int) -> shard_pb2_grpc.ShardStub:
        return self._stubs.get(shard_id, self._address(shard_id))

    def _address(self, shard_id: int) -> str:
        address = self.table.addresses.get(shard_id)
        if not address:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, f"shard {shard_id} has no known address"
            )
        return address

    async def call(self, shard_id: int, method: str, request: Any, timeout: float | None) -> Any:
        """Invoke ``method`` on one shard (coalesced with concurrent calls)."""
        timeout = shard_timeout(timeout)
        if not self.coalesce or method in NOT_COALESCED:
            return await self.direct(shard_id, method, request, timeout)
        lane = self.lanes.get(shard_id)
        if lane is None:
            lane = self.lanes[shard_id] = ShardLane(self, shard_id)
        return await lane.submit(method, request, timeout)

    async def direct(self, shard_id: int, method: str, request: Any, timeout: float) -> Any:
        """One plain RPC, its failure turned into a ServiceError naming the shard.

        A shard whose health probe failed is refused at once (fail fast, so a
        stopped shard costs callers nothing but its own users' requests).
        """
        self._refuse_suspect(shard_id)
        rpc = getattr(self.stub(shard_id), method)
        try:
            return await rpc(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._failed(shard_id, exc) from None

    async def execute(
        self, shard_id: int, calls: list[shard_pb2.ShardCall], timeout: float
    ) -> Sequence[shard_pb2.ShardCallResult]:
        """One batch on the shard's ExecuteStream, failures named as
        ``direct`` names them."""
        self._refuse_suspect(shard_id)
        stream = self._stubs.stream(shard_id, self._address(shard_id))
        try:
            return await stream.execute(calls, timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._failed(shard_id, exc) from None

    def _refuse_suspect(self, shard_id: int) -> None:
        if shard_id in self.suspect:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"{self.describe(shard_id)} is not answering its health probe; retry later",
            )

    def _failed(self, shard_id: int, exc: grpc.aio.AioRpcError) -> ServiceError:
        error = self._translate(shard_id, exc)
        if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            self._probe(shard_id)
        return error

    def _probe(self, shard_id: int) -> None:
        """After a failure, ping the shard until it answers; meanwhile it is suspect.

        Only a failed ping makes it suspect: an UNAVAILABLE that a live shard
        sends on purpose (a slot in the last step of a move) does not.
        """
        task = self._probes.get(shard_id)
        if task is None or task.done():
            self._probes[shard_id] = asyncio.get_running_loop().create_task(
                self._probe_until_healthy(shard_id)
            )

    async def _probe_until_healthy(self, shard_id: int) -> None:
        """Ping until the shard answers, or until the slot map no longer has
        it: a shard drained and removed through another router never says
        "wrong slot" to this one, so only the map tells where its slots went."""
        map_checked_at = 0.0
        while shard_id in self.table.addresses:
            try:
                await self.stub(shard_id).Ping(murmur_pb2.PingRequest(), timeout=PROBE_TIMEOUT_S)
            except (grpc.aio.AioRpcError, ServiceError):
                if shard_id not in self.suspect:
                    log.warning(
                        "%s failed its health probe; failing its calls fast",
                        self.describe(shard_id),
                    )
                self.suspect.add(shard_id)
                if time.monotonic() - map_checked_at >= MAP_CHECK_INTERVAL_S:
                    await self._refresh_quietly()
                    map_checked_at = time.monotonic()  # after: a refresh may take seconds
                    continue
                await asyncio.sleep(PROBE_INTERVAL_S)
                continue
            if shard_id in self.suspect:
                log.info("%s answers again", self.describe(shard_id))
            self.suspect.discard(shard_id)
            return
        log.info("shard %d left the slot map; no longer probing it", shard_id)
        self.suspect.discard(shard_id)

    async def refresh_map(self, remaining: float | None = None) -> None:
        """Re-learn the slot map from the shards (the newest any of them
        holds): a shard said it no longer owns a slot, or one went silent.

        Shards failing their probe are not asked (each would cost the full
        wait). A caller that waited while another refresh ran skips its own
        only if that refresh began after this call: one begun earlier may
        have read the maps before the slot move that misrouted this caller
        finished, and installed a map as stale as before. So waiters share
        at most one more refresh, never a queue of them.

        ``remaining`` is the caller's time: the refresh (waiting included)
        ends by then, reported as DEADLINE_EXCEEDED, so the caller learns
        why rather than hitting its own deadline with no word."""
        begun_before = self._refreshes_begun
        try:
            async with asyncio.timeout(None if remaining is None else shard_timeout(remaining)):
                async with self._refresh_lock:
                    if self._refreshed_through > begun_before:
                        return
                    self._refreshes_begun += 1
                    ticket = self._refreshes_begun
                    await self._install_newest_map()
                    self._refreshed_through = ticket
        except TimeoutError:
            raise ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "a shard said the slot map is stale, and refreshing it from the shards "
                "did not finish within the deadline",
            ) from None

    async def _install_newest_map(self) -> None:
        """Fetch the newest map the answering shards hold; install it if newer."""
        answering = [a for s, a in self.table.addresses.items() if s not in self.suspect]
        try:
            newest = await newest_map(
                answering or list(self.table.addresses.values()),
                wait_s=1.0,
                silent_log_level=logging.DEBUG,  # the probe already said which
            )
        except ServiceError as exc:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, f"cannot refresh the slot map: {exc.message}"
            ) from None
        if newest.version > self.table.version:
            self.table.install(newest)
            log.info("slot map refreshed to version %d", self.table.version)

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh_map()
        except ServiceError as exc:  # no shard answered: the probe goes on
            log.debug("slot map refresh while probing failed: %s", exc.message)

    def _translate(self, shard_id: int, exc: grpc.aio.AioRpcError) -> ServiceError:
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            return ServiceError(code, f"{self.describe(shard_id)} is unavailable: {exc.details()}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ServiceError(
                code, f"{self.describe(shard_id)} did not answer within the deadline"
            )
        if code == grpc.StatusCode.CANCELLED:
            return ServiceError(code, f"call to {self.describe(shard_id)} was cancelled")
        if code == grpc.StatusCode.INTERNAL and broken_transport(exc.details() or ""):
            return ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"the connection to {self.describe(shard_id)} broke during the call "
                f"({exc.details()}); it may or may not have been applied: retry",
            )
        if code == grpc.StatusCode.INTERNAL and "shard" not in (exc.details() or ""):
            # gRPC's own, not a shard's "internal error in shard N"
            return ServiceError(code, f"{self.describe(shard_id)} failed: {exc.details()}")
        trailing = exc.trailing_metadata() or ()
        if any(key == WRONG_SLOT_METADATA for key, _ in trailing):
            return WrongSlot(code, exc.details() or "wrong slot")
        return ServiceError(
            code,
            exc.details() or f"{code.name} from {self.describe(shard_id)}",
            retry_after=retry_after(trailing),
        )

    async def close(self) -> None:
        for task in self._probes.values():
            task.cancel()
        await self._stubs.close()
