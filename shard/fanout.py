"""The fan-out worker: drains this shard's outbox to the destination shards.

Records are taken in order, expanded into per-destination operations (one
batched ``Deliver`` per destination shard per round, never one per follower,
sent as a message on that shard's ExecuteStream), and removed only after
every destination applied them or holds them parked. A record with many
followers is delivered page by page with a saved resume point, and records
behind a half-delivered one wait, so an edit or delete never overtakes the
post it changes. A destination that does not answer gets its share parked
(``shard/parked.py``) and drained in order when it answers again, so one
shard's outage never holds back fan-out to the others; a destination that
no longer owns some users (the map moved) makes the round plan again.
Deliveries are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

import grpc

from murmur.execute_stream import STATUS_BY_NUMBER
from murmur.ids import now_ms, slot_of_tweet
from murmur.slots import slot_for_user, slots_for_users
from murmur.v1 import shard_pb2
from shard.delivery import DeliveryApplier
from shard.delivery_ops import op_users, split_by_owner
from shard.parked import Chunk
from shard.peers import PeerShards
from shard.state import ShardState

log = logging.getLogger("murmur.shard.fanout")

DELIVER_TIMEOUT_S = 10.0
# While posts stream in (the last round delivered several records, all of
# them), a round that finds fewer than LINGER_BELOW waits this long for more:
# rounds then carry several records and the shards exchange fewer Deliver
# calls (calls are the cost). 16 ms against 2 ms took 23% off the shards' CPU
# per post at c16, interleaved on one cluster; delivery p50 is tens of ms
# under load. A lone post after a quiet spell goes at once, and so does each
# page of a big fan-out (lingering between its pages cost a 385,120-entry
# burst ~17% of its rate).
LINGER_S = 0.016
LINGER_BELOW = 16
MAX_BACKOFF_S = 2.0
RECORDS_PER_ROUND = 256
MIN_PAGE = 100  # followers per round for one tweet, however small the budget left
MIN_STATUS_PAGE = 10
# A change of status (promotion or demotion) makes each follower's shard scan
# that inbox (up to the cap) for the author's copies: about as much work as
# this many inbox writes.
# Keeping rounds to the budget keeps any one Deliver short, so the shards'
# loops never stall for seconds behind a big account's status change.
PROMOTION_COST = 20


class Misrouted(ConnectionError):
    """A round's ops no longer fit the slot map (a destination, or this
    shard, no longer serves some of their users): plan the round again."""


class SlotsMoving(ConnectionError):
    """A destination answered UNAVAILABLE (some slots are frozen for the last
    step of a move, or it is stopping): retry the round shortly. Parked, its
    ops would make every sender queue behind it for a moment's pause."""


def delivery_cost(op: shard_pb2.DeliveryOp) -> int:
    """What applying ``op`` costs its destination, in inbox writes: one per
    user, and for news of a status its backfill and inbox scan per follower."""
    users = len(op_users(op))
    if op.WhichOneof("op") == "follow_sync":
        return users * (len(op.follow_sync.tweets) + PROMOTION_COST)
    return users


def within_budget(
    ops: list[shard_pb2.DeliveryOp], budget: int
) -> tuple[list[shard_pb2.DeliveryOp], list[shard_pb2.DeliveryOp]]:
    """The first ``ops`` that fit ``budget`` by ``delivery_cost`` (always
    some work), and the rest. A first op too big on its own is news of a
    status: its first followers go now, the others with the rest."""
    taken, spent = [], 0
    for index, op in enumerate(ops):
        cost = delivery_cost(op)
        if taken and spent + cost > budget:
            return taken, ops[index:]
        if not taken and cost > budget and op.WhichOneof("op") == "follow_sync":
            per_follower = max(1, cost // len(op.follow_sync.follower_ids))
            fits = max(1, budget // per_follower)
            head, tail = shard_pb2.DeliveryOp(), shard_pb2.DeliveryOp()
            head.CopyFrom(op)
            tail.CopyFrom(op)
            head.follow_sync.follower_ids[:] = op.follow_sync.follower_ids[:fits]
            tail.follow_sync.follower_ids[:] = op.follow_sync.follower_ids[fits:]
            if tail.follow_sync.follower_ids:
                return [head], [tail, *ops[index + 1 :]]
        taken.append(op)
        spent += cost
    return taken, []


@dataclass
class RoundPlan:
    """Operations per destination shard, in outbox order."""

    ops: dict[int, list[shard_pb2.DeliveryOp]] = field(default_factory=lambda: defaultdict(list))
    # each destination that did not answer, or already had ops parked: its
    # ops go to its parked queue in the batch that finishes the round
    parked: dict[int, list[shard_pb2.DeliveryOp]] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)
    progress: dict[int, shard_pb2.OutboxRecord] = field(default_factory=dict)
    delivered_tweets: list[tuple[int, int, int]] = field(default_factory=list)


class FanoutStats:
    """Recent delivery lags (post acknowledged -> in every follower's inbox)."""

    def __init__(self, keep: int = 10_000) -> None:
        self.lags_ms: deque[int] = deque(maxlen=keep)
        self.inbox_entries = 0
        self.rounds = 0
        self.failures = 0

    def percentile(self, fraction: float) -> float:
        if not self.lags_ms:
            return 0.0
        ordered = sorted(self.lags_ms)
        return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


class FanoutWorker:
    def __init__(
        self,
        state: ShardState,
        applier: DeliveryApplier,
        peers: PeerShards,
        linger_s: float = LINGER_S,
    ) -> None:
        self.linger_s = linger_s
        self.streaming = False  # the last round carried several small records
        self._empty_since = 0.0  # when the outbox was last found empty
        self.state = state
        self.applier = applier
        self.peers = peers
        self.stats = FanoutStats()
        self._task: asyncio.Task | None = None
        self._drainer: asyncio.Task | None = None
        self._stopping = False
        self.parked_wakeup = asyncio.Event()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="fanout")
        self._drainer = loop.create_task(self._drain_forever(), name="fanout-parked")

    async def stop(self) -> None:
        self._stopping = True
        self.state.outbox.wakeup.set()
        if self._drainer is not None:
            # a drain cut short between its send and its removal only sends
            # that chunk again after the restart: deliveries are idempotent
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping:
            try:
                worked = await self.run_round()
                backoff = 0.05
            except Exception as exc:  # retried: every delivery is idempotent
                self.stats.failures += 1
                log.warning("fan-out round failed, retrying in %.2fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            if not worked:
                self.state.outbox.wakeup.clear()
                try:
                    await asyncio.wait_for(self.state.outbox.wakeup.wait(), timeout=1.0)
                except TimeoutError:
                    pass

    async def run_round(self) -> bool:
        """Deliver one round; False when the outbox was empty.

        Destinations that do not answer, and those with ops parked already,
        get their share parked in the batch that removes the round's records;
        a destination that says the map moved (or a local share that failed:
        its slots may have moved) fails the round, which is planned afresh."""
        if not self.state.ownership.assigned:
            return False
        plan = await self._next_plan()
        if plan is None:
            return False
        await self._deliver(plan)
        txn = self.state.store.txn()
        for shard_id, ops in plan.parked.items():
            self.state.parked.park(txn, shard_id, ops)
        self.state.outbox.finish(plan.done, plan.progress, txn)
        if plan.parked:
            self.parked_wakeup.set()
        else:  # a parked share reaches its followers later, unmeasured
            self._record_lags(plan)
        self.stats.rounds += 1
        return True

    async def _next_plan(self) -> RoundPlan | None:
        records = list(self.state.outbox.peek(RECORDS_PER_ROUND))
        if not records:
            self._empty_since = self._empty_since or time.monotonic()
            return None
        if self._should_linger(len(records)):
            await asyncio.sleep(self.linger_s)
            records = list(self.state.outbox.peek(RECORDS_PER_ROUND))
        plan = self._plan(records)
        # several small records, all delivered: posts are streaming in
        self.streaming = len(records) > 1 and len(plan.done) == len(records)
        return plan

    def _should_linger(self, found: int) -> bool:
        """Wait for more records only while small posts stream in: not for a
        lone post after a quiet spell, and not while a big fan-out fills
        whole rounds (its next page is waiting already)."""
        if self._empty_since and time.monotonic() - self._empty_since >= self.linger_s:
            self.streaming = False  # a quiet spell
        self._empty_since = 0.0
        return bool(self.linger_s) and self.streaming and found < LINGER_BELOW

    # planning -------------------------------------------------------------
    def _plan(self, records: list[tuple[int, shard_pb2.OutboxRecord]]) -> RoundPlan:
        plan = RoundPlan()
        budget = self.state.settings.fanout_batch_entries
        for seq, record in records:
            kind = record.WhichOneof("work")
            if kind == "direct":
                self._add_op(plan, record.direct)
                finished, used = True, 1
            elif kind == "tweet_fanout":
                finished, used = self._plan_tweet(plan, record.tweet_fanout, budget)
            elif kind == "status_sync":
                finished, used = self._plan_status(plan, record.status_sync, budget)
            else:
                log.error("outbox record %d has no work; dropping it", seq)
                finished, used = True, 0
            budget -= used
            if not finished:
                plan.progress[seq] = record
                break
            plan.done.append(seq)
            if kind == "tweet_fanout" and record.tweet_fanout.kind == shard_pb2.FANOUT_PUT:
                plan.delivered_tweets.append(
                    (
                        record.tweet_fanout.tweet.tweet_id,
                        record.created_ms,
                        record.tweet_fanout.delivered,
                    )
                )
            if budget <= 0:
                break
        return plan

    def _add_op(self, plan: RoundPlan, op: shard_pb2.DeliveryOp) -> None:
        kind = op.WhichOneof("op")
        body = getattr(op, kind)
        user = body.followee_id if kind in ("add_follower", "remove_follower") else None
        if user is None:
            raise ValueError(f"direct outbox op {kind} has no single destination")
        plan.ops[self.state.ownership.owner_of(slot_for_user(user))].append(op)

    def _followers_page(self, followee: int, after: int, count: int) -> tuple[list[int], bool]:
        return self.state.graph.page_followers(followee, after, count)

    def _by_shard(self, user_ids: list[int]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = defaultdict(list)
        owners = self.state.ownership.owners
        for user_id, slot in zip(user_ids, slots_for_users(user_ids), strict=True):
            groups[owners[slot]].append(user_id)
        return groups

    def _plan_tweet(
        self, plan: RoundPlan, fanout: shard_pb2.TweetFanout, budget: int
    ) -> tuple[bool, int]:
        followers, more = self._followers_page(
            fanout.tweet.user_id, fanout.after_follower, max(budget, MIN_PAGE)
        )
        for shard_id, owners in self._by_shard(followers).items():
            if fanout.kind == shard_pb2.FANOUT_PUT:
                op = shard_pb2.DeliveryOp(
                    inbox_put=shard_pb2.InboxPut(owner_ids=owners, tweet=fanout.tweet)
                )
            elif fanout.kind == shard_pb2.FANOUT_EDIT:
                op = shard_pb2.DeliveryOp(
                    inbox_edit=shard_pb2.InboxEdit(owner_ids=owners, tweet=fanout.tweet)
                )
            else:
                op = shard_pb2.DeliveryOp(
                    inbox_delete=shard_pb2.InboxDelete(
                        owner_ids=owners, tweet_id=fanout.tweet.tweet_id
                    )
                )
            plan.ops[shard_id].append(op)
        fanout.delivered += len(followers)
        if more:
            fanout.after_follower = followers[-1]
        return not more, len(followers)

    def _plan_status(
        self, plan: RoundPlan, status: shard_pb2.StatusSync, budget: int
    ) -> tuple[bool, int]:
        record = self.state.users.get(self.state.store.txn(), status.followee_id)
        if record is None:
            return True, 0
        sync = self._follow_sync(record)
        # what one follower costs the destination: a backfill writes every
        # tweet; news of a change of status (a promotion or a demotion, or a
        # follow whose edge is older than the status) scans the follower's
        # inbox for the author's copies
        per_follower = len(sync.tweets) + PROMOTION_COST
        if status.follower_id:
            followers, more = [status.follower_id], False
            sync.followed_ms = status.followed_ms  # the follow it answers
        else:
            followers, more = self._followers_page(
                status.followee_id,
                status.after_follower,
                max(MIN_STATUS_PAGE, budget // max(1, per_follower)),
            )
        for shard_id, owners in self._by_shard(followers).items():
            op = shard_pb2.DeliveryOp(follow_sync=sync)
            op.follow_sync.follower_ids[:] = owners
            plan.ops[shard_id].append(op)
        if more:
            status.after_follower = followers[-1]
        return not more, len(followers) * max(1, per_follower)

    def _follow_sync(self, record: shard_pb2.UserRecord) -> shard_pb2.FollowSync:
        """The followee's status as of now, with its recent tweets when it
        is ordinary (the followers' backfill); followers not filled in."""
        sync = shard_pb2.FollowSync(
            followee_id=record.user.user_id,
            celebrity=record.user.celebrity,
            celebrity_version=record.celebrity_version,
        )
        if not record.user.celebrity:
            limit = self.state.settings.backfill_limit
            recent = list(self.state.tweets.recent(record.user.user_id, 0, limit + 1))
            sync.tweets.extend(recent[:limit])
            sync.complete = len(recent) <= limit
            if not sync.complete:
                sync.exact_from = recent[limit].tweet_id + 1
        return sync

    # delivering -----------------------------------------------------------
    async def _deliver(self, plan: RoundPlan) -> None:
        """Start the calls to the other shards, then apply the local share
        while they work, so the sender and its destinations use their cores at
        the same time instead of taking turns. A destination with ops parked
        already gets this round's share parked behind them; one that fails
        now gets it parked too (``plan.parked``)."""
        me, parked = self.state.shard_id, self.state.parked
        local = plan.ops.get(me, [])
        sends: list[tuple[int, asyncio.Future]] = []
        failure: BaseException | None = None
        try:
            for shard_id, ops in plan.ops.items():
                if shard_id == me or not ops:
                    continue
                if parked.holds(shard_id):
                    plan.parked[shard_id] = ops
                else:
                    sends.append((shard_id, self._start_send(shard_id, ops)))
            if sends and local:
                # the sends' tasks queue their batches, then each stream's
                # writer puts them on the wire: two turns of the loop
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            if local:
                self.stats.inbox_entries += self.applier.apply(local, local=True)
        except Exception as exc:  # still wait for the sends begun: none is left behind
            failure = Misrouted(f"applying this shard's share failed: {exc}")
            failure.__cause__ = exc
        results = await asyncio.gather(
            *(self._finish_send(shard_id, sending) for shard_id, sending in sends),
            return_exceptions=True,
        )
        retry = [r for r in results if isinstance(r, (Misrouted, SlotsMoving))]
        if failure is not None or retry:
            raise failure or retry[0]
        for (shard_id, _sending), result in zip(sends, results, strict=True):
            if isinstance(result, BaseException):
                plan.parked[shard_id] = plan.ops[shard_id]
                self.stats.failures += 1
                log.warning(
                    "parking %d fan-out ops for shard %d until it answers: %s",
                    len(plan.ops[shard_id]),
                    shard_id,
                    result,
                )

    def _start_send(self, shard_id: int, ops: list[shard_pb2.DeliveryOp]) -> asyncio.Future:
        """One Deliver, as a batch on the destination's ExecuteStream."""
        request = shard_pb2.DeliverRequest(from_shard=self.state.shard_id, ops=ops)
        call = shard_pb2.ShardCall(method="Deliver", request=request.SerializeToString())
        stream = self.peers.stream(shard_id)
        return asyncio.ensure_future(stream.execute([call], DELIVER_TIMEOUT_S))

    async def _finish_send(self, shard_id: int, sending: asyncio.Future) -> None:
        try:
            [result] = await sending
        except grpc.aio.AioRpcError as exc:
            raise self._failed(shard_id, exc.code(), exc.details()) from exc
        if result.code != 0:
            code = STATUS_BY_NUMBER.get(result.code, grpc.StatusCode.UNKNOWN)
            if result.wrong_slot:
                await self._learn_map_from(shard_id)
                raise Misrouted(str(self._failed(shard_id, code, result.message)))
            if code == grpc.StatusCode.UNAVAILABLE:
                raise SlotsMoving(str(self._failed(shard_id, code, result.message)))
            raise self._failed(shard_id, code, result.message)
        response = shard_pb2.DeliverResponse.FromString(result.response)
        self.stats.inbox_entries += response.inbox_entries_written

    def _failed(self, shard_id: int, code: grpc.StatusCode, details: str | None) -> Exception:
        return ConnectionError(
            f"delivery to shard {shard_id} ({self.peers.address(shard_id)}) failed: "
            f"{code.name}: {details}"
        )

    async def _learn_map_from(self, shard_id: int) -> None:
        """A destination no longer owns a slot: adopt its (newer) slot map, so
        the retried round goes to the new owner even if no operator pushes it."""
        try:
            info = await self.peers.stub(shard_id).GetShardInfo(
                shard_pb2.GetShardInfoRequest(), timeout=DELIVER_TIMEOUT_S
            )
        except grpc.aio.AioRpcError:
            return
        if info.map_version > self.state.ownership.slot_map.version:
            self.state.ownership.adopt(info.slot_map)
            log.info("slot map refreshed to version %d from shard %d", info.map_version, shard_id)

    # parked ops ---------------------------------------------------------------
    async def _drain_forever(self) -> None:
        """One drain task per destination with ops parked, so that a
        destination that hangs holds back no other's queue."""
        loop = asyncio.get_running_loop()
        draining: dict[int, asyncio.Task] = {}
        try:
            while not self._stopping:
                for destination in self.state.parked.destinations():
                    task = draining.get(destination)
                    if task is None or task.done():
                        draining[destination] = loop.create_task(
                            self._drain_destination(destination),
                            name=f"fanout-parked-{destination}",
                        )
                self.parked_wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.parked_wakeup.wait(), timeout=1.0)
        finally:
            for task in draining.values():
                task.cancel()
            await asyncio.gather(*draining.values(), return_exceptions=True)

    async def _drain_destination(self, destination: int) -> None:
        """Drain one queue chunk by chunk until it is empty, backing off
        while its destination does not answer."""
        backoff = 0.05
        while not self._stopping:
            try:
                if not await self._drain_one(destination):
                    return
                backoff = 0.05
            except Exception as exc:
                self.stats.failures += 1
                log.warning(
                    "parked fan-out for shard %d not delivered, retrying in %.2fs: %s",
                    destination,
                    backoff,
                    exc,
                )
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)

    async def drain_parked(self) -> bool:
        """One chunk from the front of every parked queue, all at once; True
        if any left its queue. (The worker's own tasks drain continuously;
        tests step through this instead.)"""
        destinations = self.state.parked.destinations()
        results = await asyncio.gather(
            *(self._drain_one(d) for d in destinations), return_exceptions=True
        )
        for destination, result in zip(destinations, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("parked fan-out for shard %d not delivered: %s", destination, result)
        return any(result is True for result in results)

    async def _drain_one(self, destination: int) -> bool:
        """Deliver the front of ``destination``'s queue; False if it is empty.

        Each op is rebuilt from this shard's data as it is now (the tweet, or
        its deletion; the follow as it stands; the author's status): while it
        waited, newer changes for its users may have reached them another way
        (their slots moved to a shard this one reaches, and maybe back), and
        a snapshot is right in any order where a replayed op is not. Users
        that moved are served by their new owner (parked for it, or applied
        here), the rest go to ``destination``."""
        if not self.state.ownership.assigned:
            raise ConnectionError("this shard has no slot map yet")
        parked = self.state.parked
        chunk = parked.peek(destination, self.state.settings.fanout_batch_entries, delivery_cost)
        if not chunk:
            return False
        by_owner = self._rebuilt_by_owner(chunk)
        local = by_owner.pop(self.state.shard_id, [])
        if local:  # at once: after an await, newer changes may have been applied here
            self.stats.inbox_entries += self.applier.apply(local, local=True)
        ours, later = within_budget(
            by_owner.pop(destination, []), self.state.settings.fanout_batch_entries
        )
        if later:  # rebuilt bigger than parked (a backfill): the rest waits its turn
            by_owner[destination] = later
        if ours and not await self._send_parked(destination, ours):
            return True  # split again by the map it answered with
        parked.remove(destination, chunk, requeue=by_owner)
        if by_owner:
            self.parked_wakeup.set()
        return True

    def _rebuilt_by_owner(self, chunk: Chunk) -> dict[int, list[shard_pb2.DeliveryOp]]:
        """Each parked op rebuilt (``_refreshed``) and split by the shard that
        owns its users now."""
        txn = self.state.store.txn()
        by_owner: dict[int, list[shard_pb2.DeliveryOp]] = defaultdict(list)
        for _seq, op in chunk:
            fresh = self._refreshed(txn, op)
            for owner, part in split_by_owner(fresh, self.state.ownership.owner_of).items():
                by_owner[owner].append(part)
        return by_owner

    async def _send_parked(self, destination: int, ops: list[shard_pb2.DeliveryOp]) -> bool:
        """Deliver ``ops`` to ``destination``. False if it refused them as
        misrouted and a newer map was learnt meanwhile (the chunk is split
        again by it); with no newer map the refusal is raised, to be retried
        after a backoff."""
        version = self.state.ownership.slot_map.version
        try:
            await self._finish_send(destination, self._start_send(destination, ops))
        except Misrouted:
            if self.state.ownership.slot_map.version == version:
                raise
            return False
        return True

    def _refreshed(self, txn, op: shard_pb2.DeliveryOp) -> shard_pb2.DeliveryOp:
        """``op`` rebuilt from this shard's data as it is now."""
        kind = op.WhichOneof("op")
        body = getattr(op, kind)
        if kind in ("inbox_put", "inbox_edit", "inbox_delete"):
            tweet_id = body.tweet_id if kind == "inbox_delete" else body.tweet.tweet_id
            if not self.state.ownership.owned[slot_of_tweet(tweet_id)]:
                return self._unrefreshed(op, slot_of_tweet(tweet_id))
            tweet = self.state.tweets.get(txn, tweet_id)
            if tweet is None:
                return shard_pb2.DeliveryOp(
                    inbox_delete=shard_pb2.InboxDelete(owner_ids=body.owner_ids, tweet_id=tweet_id)
                )
            if kind == "inbox_edit":
                return shard_pb2.DeliveryOp(
                    inbox_edit=shard_pb2.InboxEdit(owner_ids=body.owner_ids, tweet=tweet)
                )
            return shard_pb2.DeliveryOp(
                inbox_put=shard_pb2.InboxPut(owner_ids=body.owner_ids, tweet=tweet)
            )
        if kind == "follow_sync":
            record = self.state.users.get(txn, body.followee_id)
            if record is None:  # not here: its slot moved, or a user never made
                return self._unrefreshed(op, slot_for_user(body.followee_id))
            sync = self._follow_sync(record)
            sync.follower_ids[:] = body.follower_ids
            sync.followed_ms = body.followed_ms  # still the follow it answers
            return shard_pb2.DeliveryOp(follow_sync=sync)
        if not self.state.ownership.owned[slot_for_user(body.follower_id)]:
            return self._unrefreshed(op, slot_for_user(body.follower_id))
        pair = {"followee_id": body.followee_id, "follower_id": body.follower_id}
        edge = self.state.graph.following_edge(txn, body.follower_id, body.followee_id)
        if edge is not None:
            return shard_pb2.DeliveryOp(
                add_follower=shard_pb2.AddFollower(**pair, followed_ms=edge.followed_ms)
            )
        return shard_pb2.DeliveryOp(remove_follower=shard_pb2.RemoveFollower(**pair))

    def _unrefreshed(self, op: shard_pb2.DeliveryOp, slot: int) -> shard_pb2.DeliveryOp:
        """A slot move waits until no parked op and no queued record reads
        its slot (``ParkedQueues.needs``, ``Outbox.queued_for``), so this
        shard holds what it rebuilds ops from; should it not (a store
        restored from an older backup), the op goes as it was parked, in its
        queue's order, and the log says so."""
        log.warning(
            "parked %s reads slot %d, which this shard no longer holds: sent as parked",
            op.WhichOneof("op"),
            slot,
        )
        return op

    def _record_lags(self, plan: RoundPlan) -> None:
        """Keep each delivered tweet's lag for the metrics, and log the
        round's tweets on one line: a line costs ~12 µs, one per tweet was
        ~1% of a post's CPU, and a round carries several tweets while posts
        stream in (a line of 10 costs ~18 µs)."""
        finished_at = now_ms()
        delivered = []
        for tweet_id, created_ms, followers in plan.delivered_tweets:
            if not followers:
                continue
            lag = finished_at - created_ms
            self.stats.lags_ms.append(lag)
            delivered.append(f"tweet={tweet_id} followers={followers} lag_ms={lag}")
        if delivered:
            log.info("fanout round delivered %s", "; ".join(delivered))
