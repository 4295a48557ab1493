"""Online slot moves, source and target side (Redis Cluster's
importing/migrating steps, with Gizzard-style forwarding of writes).

Source: start capturing writes to the slots, copy a LevelDB snapshot of them
to the target while still serving them, send the captured writes until few
are left, then freeze the slots (callers get UNAVAILABLE and retry), wait
until no outbox record still needs the slots' local data (fan-out parked for
a shard that is down is waited for with the slots served), send the last
writes, and hand over: the target adopts the new map first, then the source.
The source then deletes its copy, and only then forgets the hand-over record,
so a crash or a cancelled stream mid-deletion is finished at the next start
(or by the next move). Routers learn the new owner from the
source's "wrong slot" answer; other shards from the map the operator pushes.

A source runs one move at a time (``refuse_while_moving``), whichever
router asks.

Target: stores entries for slots it does not own yet; an aborted move is
cleared by the next move's first batch (``reset``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import aclosing
from typing import Any, TypeVar

import grpc

from murmur.errors import ServiceError, invalid
from murmur.slots import describe_slots
from murmur.v1 import shard_pb2
from shard import keys
from shard.celebrity import (
    adopt_map,
    forget_applied,
    reevaluate_slots,
    settle_owed,
    vouched_threshold,
)
from shard.fanout import DELIVER_TIMEOUT_S
from shard.peers import PeerShards
from shard.state import ShardState
from shard.store import ChangeCapture

log = logging.getLogger("murmur.shard.migration")
_T = TypeVar("_T")

BATCH_KEYS = 2_000
# Bytes of keys and values in one ImportEntries message: far under the 64 MiB
# gRPC limit (murmur.serving), and one synced batch on the target stays short.
BATCH_BYTES = 4 << 20
ENTRY_OVERHEAD = 16  # protobuf tags and lengths of one entry, rounded up
CATCH_UP_ROUNDS = 20
FREEZE_WAIT_S = 10.0
# With the slots served again, how long a move waits for the fan-out rounds
# a freeze could not wait out: one waiting on a destination that stopped
# answering parks its share after DELIVER_TIMEOUT_S.
ROUND_WAIT_S = DELIVER_TIMEOUT_S + 1.0
MAX_FREEZES = 3
# a wait sleeps this many times as long as its last poll took, up to
# MAX_POLL_GAP_S, so that a deadline is not overshot by much (see _wait_until)
POLL_SHARE_INVERSE = 9
MAX_POLL_GAP_S = 1.0
IMPORT_TIMEOUT_S = 60.0


def slot_range(slot: int) -> bytes:
    return keys.slot_prefix(slot)


Changes = list[tuple[bytes, bytes | None]]


def bounded_batches(changes: Changes) -> list[Changes]:
    """Split ``changes`` in order into messages of at most BATCH_KEYS entries
    and BATCH_BYTES bytes: a heavy capture sent whole would exceed gRPC's
    message limit and fail every retry of the move alike. The target applies
    each message's entries in order in one batch, and the messages one after
    another, so a later change to a key still wins.
    An entry larger than BATCH_BYTES travels alone."""
    batches: list[Changes] = []
    current: Changes = []
    size = 0
    for key, value in changes:
        entry = len(key) + (len(value) if value is not None else 0) + ENTRY_OVERHEAD
        if current and (len(current) >= BATCH_KEYS or size + entry > BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append((key, value))
        size += entry
    if current:
        batches.append(current)
    return batches


_BACKGROUND: set[asyncio.Task] = set()


def _keep_running(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task:
    """Run ``coroutine`` to the end even if the stream that started it is
    cancelled (the loop holds only weak references to tasks)."""
    task = asyncio.get_running_loop().create_task(coroutine)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


class SlotMigrator:
    def __init__(self, state: ShardState, peers: PeerShards) -> None:
        self.state = state
        self.peers = peers
        self.copied = 0

    def _validate(self, request: shard_pb2.MigrateSlotsRequest) -> set[int]:
        ownership = self.state.ownership
        slots = set(request.slots)
        if not slots:
            raise invalid("slots is empty")
        if request.target_shard == ownership.shard_id:
            raise invalid(f"target_shard {request.target_shard} is this shard")
        for slot in slots:
            if not 0 <= slot < len(ownership.owned) or not ownership.owned[slot]:
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"shard {ownership.shard_id} does not own slot {slot}",
                )
        new_owners = request.new_map.owners
        if request.new_map.version <= ownership.slot_map.version or any(
            new_owners[slot] != request.target_shard for slot in slots
        ):
            raise invalid("new_map must be newer and give every moving slot to target_shard")
        if request.target_shard not in request.new_map.addresses:
            raise invalid(f"new_map has no address for shard {request.target_shard}")
        return slots

    async def migrate(
        self, request: shard_pb2.MigrateSlotsRequest
    ) -> AsyncIterator[shard_pb2.MigrateStatus]:
        await finish_given_away(self.state)  # before a new record can replace its record
        refuse_while_unsettled(self.state)
        slots = self._validate(request)
        refuse_while_moving(self.state)
        self.state.moving = request  # no await between the check and this
        try:
            # closed here, so that its own clean-up has run before the next move
            async with aclosing(self._migrate(request, slots)) as statuses:
                async for status in statuses:
                    yield status
        finally:
            self.state.moving = None

    async def _migrate(
        self, request: shard_pb2.MigrateSlotsRequest, slots: set[int]
    ) -> AsyncIterator[shard_pb2.MigrateStatus]:
        target = request.target_shard
        self.target_address = request.new_map.addresses[target]
        capture = ChangeCapture(slots)
        self.state.store.captures.append(capture)
        described = f"{len(slots)} slots to shard {target}"
        try:
            yield shard_pb2.MigrateStatus(step=f"copying {described}")
            await self._copy_snapshot(slots, target)
            yield shard_pb2.MigrateStatus(keys_copied=self.copied, step="catching up")
            await self._catch_up(slots, target, capture)
            yield shard_pb2.MigrateStatus(keys_copied=self.copied, step="freezing")
            record = await self._freeze_and_hand_over(slots, target, capture, request.new_map)
        except BaseException:
            if pending_handover(self.state) is None:
                release_slots(self.state, slots)
            else:  # interrupted mid-hand-over (e.g. the caller cancelled): settle it
                _keep_running(settle_at_start(self.state, self.peers))
            raise
        finally:
            self.state.store.captures.remove(capture)
        # started before the next yield: a caller who stops reading here (Ctrl-C)
        # must not leave the slots' keys behind
        deletion = _keep_running(finish_handover(self.state, record))
        yield shard_pb2.MigrateStatus(keys_copied=self.copied, step="deleting source copy")
        await asyncio.shield(deletion)
        yield shard_pb2.MigrateStatus(keys_copied=self.copied, step=f"moved {described}", done=True)

    async def _catch_up(self, slots: set[int], target: int, capture: ChangeCapture) -> None:
        """Send the captured writes while the slots are served, until few are
        left: those go while they are frozen."""
        for _ in range(CATCH_UP_ROUNDS):
            if len(capture.changes) < BATCH_KEYS // 4:
                break
            await self._send(slots, target, capture.take(), reset=False)

    async def _copy_snapshot(self, slots: set[int], target: int) -> None:
        snapshot = self.state.store.db.snapshot()
        first = True
        try:
            for slot in sorted(slots):
                batch: list[tuple[bytes, bytes | None]] = []
                prefix = slot_range(slot)
                for key, value in snapshot.iterator(prefix=prefix):
                    batch.append((key, value))
                    if len(batch) >= BATCH_KEYS:
                        await self._send(slots, target, batch, reset=first)
                        first, batch = False, []
                if batch or first:
                    await self._send(slots, target, batch, reset=first)
                    first = False
        finally:
            snapshot.close()

    async def _send(self, slots: set[int], target: int, changes: Changes, reset: bool) -> None:
        """Send ``changes`` in order, in bounded messages; only the first may
        ``reset`` (clear what an aborted move left on the target)."""
        for batch in bounded_batches(changes) or [[]]:
            await self._send_one(slots, target, batch, reset)
            reset = False

    async def _send_one(self, slots: set[int], target: int, changes: Changes, reset: bool) -> None:
        request = shard_pb2.ImportEntriesRequest(slots=sorted(slots), reset=reset)
        for key, value in changes:
            if value is None:
                request.entries.add(key=key, deleted=True)
            else:
                request.entries.add(key=key, value=value)
        try:
            await self.peers.stub(target, self.target_address).ImportEntries(
                request, timeout=IMPORT_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"copying to shard {target} failed: {exc.code().name}: {exc.details()}",
            ) from exc
        self.copied += len(changes)

    async def _freeze_and_hand_over(
        self,
        slots: set[int],
        target: int,
        capture: ChangeCapture,
        new_map: shard_pb2.SlotMap,
    ) -> shard_pb2.MigrateSlotsRequest:
        """Freeze, send the last writes and hand over; returns the hand-over
        record, which stays until the local copy is deleted."""
        ownership = self.state.ownership
        message = (
            f"slots are moving from shard {ownership.shard_id} to shard {target}; retry shortly"
        )
        started = await self._freeze(slots, message, lambda: self._catch_up(slots, target, capture))
        ownership.sealed.update(slots)
        # from here a threshold change skips these slots: their users stay
        # checked against this one, which the target may then trust
        assign = shard_pb2.AssignSlotsRequest(slot_map=new_map)
        vouched = vouched_threshold(self.state)
        if vouched is not None:
            assign.evaluated_threshold = vouched
            assign.evaluated_slots.extend(sorted(slots))
        await self._send(slots, target, capture.take(), reset=False)
        if ownership.slot_map.version >= new_map.version:  # no await from here to the record
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"shard {ownership.shard_id} took slot map version {ownership.slot_map.version} "
                f"while moving slots to shard {target} under version {new_map.version} (another "
                "map change); the move was rolled back: retry it",
            )
        record = shard_pb2.MigrateSlotsRequest(
            slots=sorted(slots), target_shard=target, new_map=new_map
        )
        record_handover(self.state, record)
        try:
            await self.peers.stub(target, self.target_address).AssignSlots(
                assign, timeout=IMPORT_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            # the target may have adopted the map and only the answer was lost
            if not await settle_handover(self.state, self.peers):
                raise ServiceError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"shard {target} did not take the slots ({exc.code().name}); "
                    "the move was rolled back",
                ) from exc
        else:
            ownership.adopt(new_map)
        log.info(
            "handed %d slots to shard %d (frozen %.0f ms)",
            len(slots),
            target,
            (time.monotonic() - started) * 1000,
        )
        return record

    async def _freeze(
        self, slots: set[int], message: str, catch_up: Callable[[], Awaitable[None]]
    ) -> float:
        """Freeze the slots once no fan-out still needs their local data;
        returns when they froze.

        Fan-out already queued for the slots is waited for with them served,
        and so is parked fan-out (only its destination coming back clears
        it); a freeze then waits only for what came since, FREEZE_WAIT_S at
        most. If fan-out for the slots gets parked while they are frozen (a
        destination went down meanwhile), or what is queued for them has not
        drained when that time is up (a round waits on a destination that
        stopped answering, and parks its share after DELIVER_TIMEOUT_S),
        the slots are served again until those rounds have ended and the
        parked fan-out drained, then frozen anew; MAX_FREEZES times at most.
        Only the time spent in each served wait counts against its budget
        (FREEZE_WAIT_S for parked fan-out; ROUND_WAIT_S for what was queued
        before the first freeze, and as much for the rounds after), so a
        long freeze leaves them whole. The writes the slots took meanwhile
        are sent (``catch_up``) before each freeze, not while frozen."""
        ownership = self.state.ownership
        parked_left, rounds_left = FREEZE_WAIT_S, ROUND_WAIT_S
        queued = self._newest_needing(slots)  # the newest record to wait out, served
        if queued is not None:
            await self._wait_rounds_ended(slots, queued, time.monotonic() + ROUND_WAIT_S)
        blocking: int | None = None
        outcome = ""
        for _ in range(MAX_FREEZES):
            began = time.monotonic()
            if blocking is not None:
                await self._wait_rounds_ended(slots, blocking, began + rounds_left)
                rounds_left -= time.monotonic() - began
            began = time.monotonic()
            await self._wait_parked_clear(slots, began + parked_left)  # before refusing writes
            parked_left -= time.monotonic() - began
            await catch_up()
            for slot in slots:
                ownership.frozen[slot] = message
            started = time.monotonic()
            outcome = await self._wait_outbox_clear(slots, started + FREEZE_WAIT_S)
            if outcome == "drained":
                return started
            for slot in slots:
                ownership.frozen.pop(slot, None)
            blocking = self._newest_needing(slots) if outcome == "slow" else None
            log.warning(
                "fan-out for slots moving to another shard %s; serving them again until it has",
                self._frozen_outcome(outcome, slots),
            )
        raise ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            f"the moving slots were frozen {MAX_FREEZES} times, and fan-out that reads them "
            f"{self._frozen_outcome(outcome, slots)} the last time; move aborted: retry once every "
            "shard answers steadily",
        )

    def _frozen_outcome(self, outcome: str, slots: set[int]) -> str:
        """Why a freeze ended without draining, for the log and the error."""
        if outcome == "parked":
            return f"was parked for shard(s) {self._parked_for()} while they were frozen"
        queued = len(self._needing(slots))
        return f"had not drained {FREEZE_WAIT_S:.0f}s into the freeze ({queued} records queued)"

    def _parked_for(self) -> str:
        return ", ".join(str(d) for d in self.state.parked.destinations())

    def _needing(self, slots: set[int]) -> set[int]:
        """Sequence numbers of the queued records that read ``slots``."""
        return self.state.outbox.queued_for(slots)

    def _oldest_needing(self, slots: set[int]) -> int | None:
        return min(self._needing(slots), default=None)

    def _newest_needing(self, slots: set[int]) -> int | None:
        return max(self._needing(slots), default=None)

    async def _wait_parked_clear(self, slots: set[int], deadline: float) -> None:
        """Parked fan-out reads the sender's data when it is finally sent;
        only a destination coming back clears it, so a move waits for that
        before it freezes the slots, and fails naming the destinations."""
        parked = self.state.parked

        def failure() -> ServiceError:
            return ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"shard {self.state.shard_id} holds fan-out parked for shard(s) "
                f"{self._parked_for()}, which did not answer, and it reads the moving slots; "
                "bring them back (or remove them) and retry the move",
            )

        await self._wait_until(
            lambda: None if parked.needs(slots) else True, deadline, interval=0.05, failure=failure
        )

    async def _wait_rounds_ended(self, slots: set[int], newest: int, deadline: float) -> None:
        """Wait, with the slots served, until the records for them up to
        ``newest`` have been delivered or parked (newer ones may come: the
        next freeze waits for those)."""

        def failure() -> ServiceError:
            queued = sum(1 for seq in self._needing(slots) if seq <= newest)
            return ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{queued} fan-out records that read the moving slots were still queued after "
                f"{ROUND_WAIT_S:.0f}s of waiting for them with the slots served (a destination "
                "shard hung, or a backlog too big to drain in that time); move aborted",
            )

        def ended() -> bool | None:
            oldest = self._oldest_needing(slots)
            return True if oldest is None or oldest > newest else None

        await self._wait_until(
            ended,
            deadline,
            interval=0.01,
            failure=failure,
            nudge=self.state.outbox.wakeup.set,
        )

    async def _wait_outbox_clear(self, slots: set[int], deadline: float) -> str:
        """Wait, frozen, until no queued fan-out needs the slots ("drained"),
        some for them got parked ("parked"), or ``deadline`` passed ("slow")."""

        def outcome() -> str | None:
            if self.state.parked.needs(slots):
                return "parked"
            if self._oldest_needing(slots) is None:
                return "drained"
            return "slow" if time.monotonic() > deadline else None

        return await self._wait_until(
            outcome, math.inf, interval=0.01, nudge=self.state.outbox.wakeup.set
        )

    async def _wait_until(
        self,
        outcome: Callable[[], _T | None],
        deadline: float,
        interval: float,
        failure: Callable[[], ServiceError] | None = None,
        nudge: Callable[[], None] | None = None,
    ) -> _T:
        """Poll ``outcome`` until it answers (None: not yet), and return that;
        past ``deadline`` raise ``failure()``.

        ``outcome`` gathers the moving slots' queued records from the
        outbox's index: microseconds, unless the slots themselves have
        tens of thousands queued. Polls are spaced to ~9x what the last one
        took, so even then they keep to about a tenth of the event loop
        (and of the fan-out that drains the backlog).
        """
        while True:
            began = time.monotonic()
            answer = outcome()
            if answer is not None:
                return answer
            if time.monotonic() > deadline and failure is not None:
                raise failure()
            if nudge is not None:
                nudge()
            took = time.monotonic() - began
            await asyncio.sleep(max(interval, min(MAX_POLL_GAP_S, POLL_SHARE_INVERSE * took)))


def import_entries(state: ShardState, request: shard_pb2.ImportEntriesRequest) -> int:
    """Target side: store copied entries of slots this shard does not own yet."""
    slots = set(request.slots)
    refuse_while_dropping(state, slots)
    for slot in slots:
        if state.ownership.owned[slot]:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"shard {state.shard_id} already owns slot {slot}; refusing to import into it",
            )
    prefixes = {keys.slot_prefix(slot) for slot in slots}
    for entry in request.entries:
        if entry.key[:2] not in prefixes:
            raise invalid(f"entry key {entry.key[:12].hex()} is outside the imported slots")
    db = state.store.db
    with db.write_batch(sync=True) as batch:
        if request.reset:
            for prefix in prefixes:
                for key in db.iterator(prefix=prefix, include_value=False):
                    batch.delete(key)
        for entry in request.entries:
            if entry.deleted:
                batch.delete(entry.key)
            else:
                batch.put(entry.key, entry.value)
    state.store.hot.clear()  # written around Txn: forget any copy of these keys
    return len(request.entries)


# A hand-over that a crash interrupted ------------------------------------------
#
# Before asking the target to adopt the new map, the source writes the move
# down. If it dies (or loses the answer) before adopting the map itself, the
# record tells it at the next start to ask the target whether the hand-over
# happened: if the target owns the slots, the source adopts the map and drops
# its copy; if not, it keeps serving them. Until it knows, the slots stay
# sealed, so two shards never both accept writes for one slot. The record is
# cleared only once the copy is dropped, so a deletion that a crash or a
# cancelled stream cut short is finished too.

HANDOVER_KEY = keys.shard_meta("handover")
SETTLE_ATTEMPTS = 20


def record_handover(state: ShardState, request: shard_pb2.MigrateSlotsRequest) -> None:
    state.store.db.put(HANDOVER_KEY, request.SerializeToString(), sync=True)


def clear_handover(state: ShardState) -> None:
    state.store.db.delete(HANDOVER_KEY, sync=True)


def pending_handover(state: ShardState) -> shard_pb2.MigrateSlotsRequest | None:
    raw = state.store.get(HANDOVER_KEY)
    return shard_pb2.MigrateSlotsRequest.FromString(raw) if raw is not None else None


def seal_pending_handover(state: ShardState) -> shard_pb2.MigrateSlotsRequest | None:
    """At start, before anything writes: seal the slots of a hand-over that
    may have happened, until ``settle_at_start`` knows. A threshold given on
    the command line re-evaluates celebrities next, and a flip written into
    slots the target already took would be deleted with this copy; sealed,
    they are skipped, and re-evaluated if settling gives them back."""
    request = pending_handover(state)
    if request is not None:
        state.ownership.sealed.update(request.slots)
    return request


def take_map(
    state: ShardState, slot_map: shard_pb2.SlotMap, consistent: Iterable[int] = ()
) -> list[int]:
    """Adopt a map a router pushed (``AssignSlots``) or the peers hold
    (``shard.map_catch_up``); the slots it gives this shard. Refused while
    this shard still drops its copy of a slot the map gives back."""
    gained = state.ownership.gains(slot_map)
    refuse_while_dropping(state, set(gained))
    adopt_map(state, slot_map, gained, consistent)
    return gained


def refuse_while_dropping(state: ShardState, slots: set[int]) -> None:
    """Refuse to take back slots this shard handed over and is still dropping
    its copy of (the record stays until the drop ends, maybe in a task that
    outlived a cancelled move): the drop would delete what arrives."""
    request = pending_handover(state)
    clash = sorted(slots & set(request.slots)) if request is not None else []
    if clash:
        raise ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            f"shard {state.shard_id} is still dropping its copy of slots "
            f"{describe_slots(clash)} from their move to shard {request.target_shard}; "
            "retry once that is done",
        )


def refuse_while_moving(state: ShardState) -> None:
    """One move at a time per source, even through several routers (each
    router serializes only its own): a second move failing while frozen would
    leave its slots frozen behind the first one's hand-over record, and its
    settling could decide about the first one's slots while their AssignSlots
    is still on its way."""
    moving = state.moving
    if moving is not None:
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"shard {state.shard_id} is already moving slots {describe_slots(moving.slots)} "
            f"to shard {moving.target_shard}; one move at a time per shard: retry when it ends",
        )


def refuse_while_unsettled(state: ShardState) -> None:
    """One hand-over record at a time: a second move's record would replace
    an unsettled one, and the first move's slots, sealed until it settles,
    would then never be settled (a restart would serve them unasked, though
    the target may own them)."""
    request = pending_handover(state)
    if request is not None:
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"shard {state.shard_id} has not settled the hand-over of slots "
            f"{describe_slots(request.slots)} to shard {request.target_shard} (it retries "
            "until that shard answers); move other slots once it has",
        )


async def stop_background() -> None:
    """At shutdown: stop the drops that outlived their moves before the store
    closes under them. Their records stay, and the next start finishes them."""
    tasks = list(_BACKGROUND)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def given_away(state: ShardState, request: shard_pb2.MigrateSlotsRequest) -> bool:
    """Has this shard adopted the recorded map (or a later one) without the
    slots? It adopts it only once the target took them, so then the hand-over
    happened and only the deletion may be unfinished: no need to ask."""
    ownership = state.ownership
    return ownership.slot_map.version >= request.new_map.version and not any(
        ownership.owned[s] for s in request.slots
    )


async def finish_handover(state: ShardState, request: shard_pb2.MigrateSlotsRequest) -> None:
    """Drop the local copy of a handed-over move's slots, then its record (if
    no later move replaced it): the record is what finishes a cut-short drop."""
    await _drop_slots(state, set(request.slots))
    if pending_handover(state) == request:
        clear_handover(state)


async def finish_given_away(state: ShardState) -> None:
    """Finish the deletion of a recorded move whose slots this shard already
    gave away (a cancelled stream stopped it), before a new move records its
    own hand-over over it."""
    request = pending_handover(state)
    if request is not None and given_away(state, request):
        await finish_handover(state, request)


def release_slots(state: ShardState, slots: set[int]) -> None:
    """Serve slots again after a move that did not happen. A threshold
    change skipped the sealed ones (its writes would have missed the move's
    last capture), so their users are re-evaluated now."""
    ownership = state.ownership
    skipped = {s for s in slots if s in ownership.sealed and ownership.owned[s]}
    for slot in slots:
        ownership.frozen.pop(slot, None)
        ownership.sealed.discard(slot)
    try:
        reevaluate_slots(state, skipped)
        settle_owed(state, skipped)
    except Exception:  # a failing disk: report the move's own error, log this one
        log.exception("re-evaluating celebrities of %d released slots failed", len(skipped))
        forget_applied(state)


async def _target_took(
    state: ShardState, peers: PeerShards, request: shard_pb2.MigrateSlotsRequest
) -> bool:
    """Ask the target whether it owns the recorded slots (retrying a while)."""
    address = request.new_map.addresses[request.target_shard]
    for attempt in range(SETTLE_ATTEMPTS):
        try:
            info = await peers.stub(request.target_shard, address).GetShardInfo(
                shard_pb2.GetShardInfoRequest(), timeout=2.0
            )
            break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
    else:
        raise ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            f"cannot reach shard {request.target_shard} to settle the hand-over of "
            f"{len(request.slots)} slots; they stay sealed",
        )
    owners = info.slot_map.owners
    return bool(owners) and all(owners[s] == request.target_shard for s in request.slots)


async def settle_handover(state: ShardState, peers: PeerShards) -> bool:
    """Find out whether the recorded hand-over happened; True if it did.

    Raises ServiceError if the target cannot be asked (the slots stay sealed).
    """
    request = pending_handover(state)
    if request is None:
        return False
    slots = set(request.slots)
    state.ownership.sealed.update(s for s in slots if state.ownership.owned[s])
    handed = given_away(state, request) or await _target_took(state, peers, request)
    if handed:
        if request.new_map.version > state.ownership.slot_map.version:
            state.ownership.adopt(request.new_map)
        kept = sorted(s for s in slots if state.ownership.owned[s])
        if kept:  # another map of the move's version (or newer) arrived meanwhile
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"slots {describe_slots(kept)} went to shard {request.target_shard}, but shard "
                f"{state.shard_id}'s own map (version {state.ownership.slot_map.version}) "
                "still gives them to it: its copy stays, sealed, until a map that does not "
                "arrives (a router mends it at its next map change)",
            )
        await _drop_slots(state, slots)
        log.info("hand-over of %d slots to shard %d completed", len(slots), request.target_shard)
    else:
        log.info("hand-over to shard %d did not happen; keeping the slots", request.target_shard)
    release_slots(state, slots)
    clear_handover(state)
    return handed


async def _drop_slots(state: ShardState, slots: set[int]) -> None:
    """Drop a copy in small batches, letting requests run between. The
    slots have left: a re-check owes them nothing any more."""
    db = state.store.db
    for slot in sorted(slots):
        while True:
            keys_iter = db.iterator(prefix=slot_range(slot), include_value=False)
            doomed = list(itertools.islice(keys_iter, BATCH_KEYS))
            keys_iter.close()
            if not doomed:
                break
            with db.write_batch() as batch:
                for key in doomed:
                    batch.delete(key)
            state.store.hot.clear()  # deleted around Txn: forget any copy of these keys
            await asyncio.sleep(0)
    settle_owed(state, slots)


async def settle_at_start(state: ShardState, peers: PeerShards) -> None:
    """At start-up: keep trying until an interrupted hand-over is settled."""
    while pending_handover(state) is not None:
        try:
            await settle_handover(state, peers)
        except ServiceError as exc:
            log.warning("%s; retrying", exc.message)
            await asyncio.sleep(2.0)
