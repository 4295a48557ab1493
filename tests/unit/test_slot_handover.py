"""A slot move between two shards in one process, on real LevelDB folders.

The source is the ``Shard`` of ``test_shard_servicer`` (shard 0, slots
0-2047); the target is a ``ShardServicer`` on its own folder (shard 1, slots
2048-4095) that the source reaches through ``LocalPeers``, which calls the
target's handlers in process. Hooks in ``LocalPeers`` let a
test act at a chosen step of the move: while the snapshot is copied, or in
the last phase, when the moving slots are sealed and their last changes have
already been taken.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from murmur.errors import ServiceError
from murmur.slots import SLOT_COUNT, slot_for_user
from murmur.v1 import shard_pb2
from shard import celebrity, keys, migration
from shard.celebrity import reevaluate_all
from shard.consistency import check_slots
from shard.delivery import DeliveryApplier
from shard.migration import (
    BATCH_BYTES,
    BATCH_KEYS,
    SlotMigrator,
    pending_handover,
    seal_pending_handover,
    settle_at_start,
)
from shard.outbox import add_follower_record
from shard.servicer import ShardServicer
from shard.settings import ShardSettings
from shard.state import ShardState
from tests.unit.test_shard_servicer import HALF, Shard, handle_in

ADDRESSES = {0: "127.0.0.1:1", 1: "127.0.0.1:2"}
FIRST_MAP = shard_pb2.SlotMap(version=1, addresses=ADDRESSES, owners=HALF)

Hook = Callable[[], Awaitable[None]]


class Killed(Exception):
    """Stands for kill -9: the process stops here and nothing after runs."""


class PeerContext:
    """What a handler's refusal looks like to the calling shard: gRPC's
    error, as its stub would raise it."""

    def time_remaining(self) -> None:
        return None

    def set_trailing_metadata(self, trailing: tuple) -> None:
        self.trailing = trailing

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), message)


class LocalStub:
    """The target's Shard service, called in process."""

    def __init__(self, peers: LocalPeers) -> None:
        self.peers = peers
        self.servicer = peers.servicer

    async def ImportEntries(self, request: Any, timeout: float) -> Any:  # noqa: N802
        self.peers.imports.append(request)
        if len(self.peers.imports) == 1 and self.peers.on_first_import:
            await self.peers.on_first_import()
        return await self.servicer.ImportEntries(request, PeerContext())

    async def AssignSlots(self, request: Any, timeout: float) -> Any:  # noqa: N802
        if self.peers.on_assign:
            await self.peers.on_assign()
        if self.peers.refuse_assign:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
        return await self.servicer.AssignSlots(request, PeerContext())

    async def GetShardInfo(self, request: Any, timeout: float) -> Any:  # noqa: N802
        return await self.servicer.GetShardInfo(request, PeerContext())


class LocalPeers:
    def __init__(self, target: ShardState) -> None:
        self.target = target
        self.servicer = ShardServicer(target, DeliveryApplier(target))
        self.imports: list[shard_pb2.ImportEntriesRequest] = []
        self.on_first_import: Hook | None = None  # runs while the snapshot is copied
        self.on_assign: Hook | None = None  # runs while the moving slots are sealed
        self.refuse_assign = False

    def stub(self, shard_id: int, address: str | None = None) -> LocalStub:
        return LocalStub(self)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Shard, ShardState, LocalPeers]]:
    source = Shard(tmp_path / "source", ShardSettings(), owners=None)
    source.state.ownership.adopt(FIRST_MAP)
    reevaluate_all(source.state)  # as a shard's start does: its threshold is applied
    target = ShardState.open(str(tmp_path / "target"), shard_id=1, settings=ShardSettings())
    target.ownership.adopt(FIRST_MAP)
    yield source, target, LocalPeers(target)
    for shard in source.opened:
        shard.close()
    target.store.close()


def users_in_source_slots(source: Shard, count: int, stem: str = "u") -> list[int]:
    """Users on distinct slots of the source (ids minted by the source)."""
    users: list[int] = []
    taken: set[int] = set()
    for n in range(count):
        handle = handle_in(lambda s: s < SLOT_COUNT // 2 and s not in taken, f"{stem}{n}x")
        users.append(source.create_user(handle))
        taken.add(slot_for_user(users[-1]))
    return users


def move_request(slots: set[int], version: int = 2) -> shard_pb2.MigrateSlotsRequest:
    owners = list(HALF)
    for slot in slots:
        owners[slot] = 1
    new_map = shard_pb2.SlotMap(version=version, addresses=ADDRESSES, owners=owners)
    return shard_pb2.MigrateSlotsRequest(slots=sorted(slots), target_shard=1, new_map=new_map)


def slot_keys(state: ShardState, slots: set[int]) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for slot in slots:
        found.update(state.store.db.iterator(prefix=keys.slot_prefix(slot)))
    return found


def fill(state: ShardState, slot: int, count: int, tag: bytes = b"~") -> None:
    """Bulk keys in ``slot`` so that dropping them takes several batches."""
    txn = state.store.txn()
    for n in range(count):
        txn.put(keys.slot_prefix(slot) + tag + n.to_bytes(4, "big"), b"x" * 50)
    txn.commit()


async def run_move(
    source: ShardState,
    peers: LocalPeers,
    request: shard_pb2.MigrateSlotsRequest,
    stop_at: str | None = None,
) -> list[str]:
    """Drive a move; with ``stop_at``, stop reading at that step as an
    operator's Ctrl-C does (the stream is closed there)."""
    steps: list[str] = []
    stream = SlotMigrator(source, peers).migrate(request)  # type: ignore[arg-type]
    try:
        async for status in stream:
            steps.append(status.step)
            if stop_at is not None and status.step == stop_at:
                break
    finally:
        await stream.aclose()
    return steps


def queue_records(monkeypatch, state: ShardState, queued: Callable[[], set[int]]) -> None:
    """The source's outbox holds the records ``queued`` names, all reading
    the moving slots: stands for fan-out a move must wait out."""
    monkeypatch.setattr(state.outbox, "queued_for", lambda slots: queued())


async def settled(state: ShardState, timeout_s: float = 5.0) -> None:
    """Let background work of the move (the source's deletion) finish."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while pending_handover(state) is not None:
        assert asyncio.get_running_loop().time() < deadline, "the hand-over never settled"
        await asyncio.sleep(0.01)


# A: the source's copy is dropped even if the deletion is cut short ---------------


def test_a_move_cancelled_while_deleting_still_drops_the_source_copy(pair) -> None:
    source, target, peers = pair
    users = users_in_source_slots(source, 3)
    slots = {slot_for_user(u) for u in users}
    fill(source.state, min(slots), 3 * BATCH_KEYS)
    expected = slot_keys(source.state, slots)

    async def scenario() -> None:
        steps = await run_move(source.state, peers, move_request(slots), "deleting source copy")
        assert steps[-1] == "deleting source copy"  # the operator pressed Ctrl-C here
        await settled(source.state)

    asyncio.run(scenario())
    assert slot_keys(source.state, slots) == {}
    assert pending_handover(source.state) is None
    assert slot_keys(target, slots) == expected
    assert not any(source.state.ownership.owned[s] for s in slots)


def test_a_move_cancelled_in_the_middle_of_the_deletion_still_finishes_it(pair) -> None:
    source, target, peers = pair
    users = users_in_source_slots(source, 3)
    slots = {slot_for_user(u) for u in users}
    fill(source.state, min(slots), 3 * BATCH_KEYS)  # several batches, with pauses between

    async def scenario() -> None:
        deleting = asyncio.Event()

        async def operator() -> None:
            stream = SlotMigrator(source.state, peers).migrate(move_request(slots))  # type: ignore[arg-type]
            async for status in stream:
                if status.step == "deleting source copy":
                    deleting.set()

        move = asyncio.create_task(operator())
        await deleting.wait()
        move.cancel()  # the caller's deadline or Ctrl-C, while the first batches are deleted
        with pytest.raises(asyncio.CancelledError):
            await move
        await settled(source.state)

    asyncio.run(scenario())
    assert slot_keys(source.state, slots) == {}
    assert pending_handover(source.state) is None


def test_a_kill_during_the_deletion_is_finished_at_the_next_start(
    pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target, peers = pair
    users = users_in_source_slots(source, 3)
    slots = {slot_for_user(u) for u in users}
    fill(source.state, min(slots), 3 * BATCH_KEYS)
    real_drop = migration._drop_slots

    async def dies_after_one_batch(state: ShardState, slots: set[int]) -> None:
        db = state.store.db
        with db.write_batch() as batch:
            for key in list(db.iterator(prefix=keys.slot_prefix(min(slots)), include_value=False))[
                :BATCH_KEYS
            ]:
                batch.delete(key)
        raise Killed

    monkeypatch.setattr(migration, "_drop_slots", dies_after_one_batch)
    with pytest.raises(Killed):
        asyncio.run(run_move(source.state, peers, move_request(slots)))
    assert slot_keys(source.state, slots)  # the kill left keys of the moved slots behind
    monkeypatch.setattr(migration, "_drop_slots", real_drop)

    restarted = source.reopen()  # what shard/main.py does at start:
    state = restarted.state
    assert seal_pending_handover(state) is not None, "nothing would finish the deletion"
    asyncio.run(settle_at_start(state, peers))  # type: ignore[arg-type]
    assert slot_keys(state, slots) == {}
    assert pending_handover(state) is None
    assert not state.ownership.sealed
    assert state.ownership.slot_map.version == 2


def test_a_next_move_first_finishes_a_cut_short_deletion(pair) -> None:
    source, target, peers = pair
    users = users_in_source_slots(source, 2)
    first, second = {slot_for_user(users[0])}, {slot_for_user(users[1])}

    async def scenario() -> None:
        await run_move(source.state, peers, move_request(first), "deleting source copy")
        # no pause: the next move starts before the first one's deletion ran
        await run_move(source.state, peers, move_request(second, version=3))
        await settled(source.state)

    asyncio.run(scenario())
    assert slot_keys(source.state, first | second) == {}
    assert pending_handover(source.state) is None


# B: captured changes travel in bounded messages, in order -------------------------


def test_a_large_capture_is_sent_in_bounded_messages_and_later_changes_win(pair) -> None:
    source, target, peers = pair
    users = users_in_source_slots(source, 2)
    slots = {slot_for_user(u) for u in users}
    slot = min(slots)
    prefix = keys.slot_prefix(slot) + b"~"
    rewritten, dropped = prefix + b"rewritten", prefix + b"dropped"

    async def heavy_fan_out() -> None:
        """Writes to the moving slots while their snapshot is being copied."""
        store = source.state.store
        txn = store.txn()
        txn.put(rewritten, b"first")
        txn.put(dropped, b"soon gone")
        for n in range(BATCH_KEYS + BATCH_KEYS // 2):
            txn.put(prefix + b"a" + n.to_bytes(4, "big"), b"v" * 100)
        txn.commit()
        txn = store.txn()
        txn.delete(rewritten)
        for n in range(6):  # 6 MiB in six entries: over BATCH_BYTES under any key count
            txn.put(prefix + b"big" + bytes([n]), bytes([n]) * (1 << 20))
        for n in range(BATCH_KEYS):
            txn.put(prefix + b"b" + n.to_bytes(4, "big"), b"w" * 100)
        txn.commit()
        txn = store.txn()
        txn.put(rewritten, b"last")
        txn.delete(dropped)
        txn.commit()

    peers.on_first_import = heavy_fan_out
    before_deletion: dict[bytes, bytes] = {}

    async def remember() -> None:
        before_deletion.update(slot_keys(source.state, slots))

    peers.on_assign = remember
    asyncio.run(run_move(source.state, peers, move_request(slots)))

    sizes = [(len(r.entries), r.ByteSize()) for r in peers.imports]
    for count, size in sizes:
        assert count <= BATCH_KEYS and size <= BATCH_BYTES + 1024, sizes
    captured = [r for r in peers.imports if any(e.key.startswith(prefix) for e in r.entries)]
    assert len(captured) >= 4, sizes  # 5,000 changes and 6 MiB: several messages
    assert [r.reset for r in peers.imports] == [True] + [False] * (len(peers.imports) - 1)
    landed = slot_keys(target, slots)
    assert landed == before_deletion
    assert landed[rewritten] == b"last" and dropped not in landed
    assert landed[prefix + b"big" + bytes([5])] == bytes([5]) * (1 << 20)


def test_batches_split_by_count_and_bytes_in_order() -> None:
    small = [(b"k%05d" % n, b"v") for n in range(BATCH_KEYS * 2 + 1)]
    assert [len(b) for b in migration.bounded_batches(small)] == [BATCH_KEYS, BATCH_KEYS, 1]
    huge = BATCH_BYTES + 1
    mixed = [(b"a", b"x" * huge), (b"b", None), (b"c", b"y" * (BATCH_BYTES // 2))] * 2
    batches = migration.bounded_batches(mixed)
    assert [kv for batch in batches for kv in batch] == mixed
    assert [[k for k, _ in batch] for batch in batches] == [[b"a"], [b"b", b"c"]] * 2
    assert migration.bounded_batches([]) == []


# C: work on sealed slots is skipped, and done by whoever owns them afterwards -----


def make_famous(state: ShardState, user_id: int, followers: int) -> None:
    """Give ``user_id`` a follower count (as if followed) under the threshold."""
    txn = state.store.txn()
    record = shard_pb2.UserRecord.FromString(state.store.get(user_key(user_id)))
    record.user.follower_count = followers
    state.users.put(txn, record)
    txn.commit()


def user_key(user_id: int) -> bytes:
    return keys.user(slot_for_user(user_id), user_id)


def record_on(state: ShardState, user_id: int) -> shard_pb2.UserRecord:
    return shard_pb2.UserRecord.FromString(state.store.get(user_key(user_id)))


def status_syncs(state: ShardState) -> list[int]:
    return [
        record.status_sync.followee_id
        for _seq, record in state.outbox.peek(10_000)
        if record.WhichOneof("work") == "status_sync"
    ]


def lower_threshold_everywhere(source: Shard, peers: LocalPeers) -> Hook:
    """What the router's UpdateSettings does: every shard takes the new
    threshold (and re-evaluates its users)."""

    async def update() -> None:
        request = shard_pb2.UpdateSettingsRequest(celebrity_threshold=5)
        for servicer in (source.servicer, peers.servicer):
            await servicer.UpdateSettings(request, None)

    return update


def star_of_a_moving_slot(source: Shard, peers: LocalPeers) -> tuple[int, set[int]]:
    """A user with 50 followers in a slot about to move, and a threshold of 5
    set on both shards in the move's last phase: the user's flip is due."""
    (star,) = users_in_source_slots(source, 1)
    make_famous(source.state, star, 50)
    peers.on_assign = lower_threshold_everywhere(source, peers)
    return star, {slot_for_user(star)}


def test_a_threshold_change_in_a_moves_last_phase_takes_effect_on_the_target(pair) -> None:
    source, target, peers = pair
    star, slots = star_of_a_moving_slot(source, peers)

    asyncio.run(run_move(source.state, peers, move_request(slots)))

    moved = record_on(target, star)
    assert moved.user.celebrity and moved.celebrity_version == 1
    assert status_syncs(target) == [star]  # the target tells the star's followers
    assert status_syncs(source.state) == []  # the source wrote nothing doomed to deletion
    assert slot_keys(source.state, slots) == {}


def reevaluated_on_adopting(monkeypatch) -> list[int]:
    """The slots whose users ``adopt_map`` re-checks, as it is called."""
    seen: list[int] = []
    real = celebrity.reevaluate_slots

    def recording(state: ShardState, slots, batch: int = 500) -> int:
        slots = list(slots)
        seen.extend(slots)
        return real(state, slots, batch)

    monkeypatch.setattr(celebrity, "reevaluate_slots", recording)
    return seen


def test_a_target_under_the_sources_threshold_takes_the_slots_without_reading_users(
    pair, monkeypatch
) -> None:
    """The source vouches for its users of the slots it hands over (checked
    against the threshold it sealed them under, the target's too): adopting
    the map reads none of them while the slots are frozen."""
    source, target, peers = pair
    users = users_in_source_slots(source, 3)
    slots = {slot_for_user(u) for u in users}
    reevaluated = reevaluated_on_adopting(monkeypatch)

    asyncio.run(run_move(source.state, peers, move_request(slots)))

    assert reevaluated == []
    assert all(target.ownership.owned[s] for s in slots)


def test_a_target_under_another_threshold_re_checks_the_users_it_takes(pair, monkeypatch) -> None:
    """Only the target was given the lower threshold (an operator's push
    half done): the star it takes is checked against it on adopting."""
    source, target, peers = pair
    (star,) = users_in_source_slots(source, 1)
    make_famous(source.state, star, 50)
    slots = {slot_for_user(star)}
    asyncio.run(
        peers.servicer.UpdateSettings(shard_pb2.UpdateSettingsRequest(celebrity_threshold=5), None)
    )
    reevaluated = reevaluated_on_adopting(monkeypatch)

    asyncio.run(run_move(source.state, peers, move_request(slots)))

    assert reevaluated == sorted(slots)
    moved = record_on(target, star)
    assert moved.user.celebrity and moved.celebrity_version == 1
    assert status_syncs(target) == [star]


def test_a_threshold_change_skipped_for_a_move_that_fails_is_applied_by_the_source(pair) -> None:
    source, _target, peers = pair
    star, slots = star_of_a_moving_slot(source, peers)
    peers.refuse_assign = True

    with pytest.raises(ServiceError, match="rolled back"):
        asyncio.run(run_move(source.state, peers, move_request(slots)))

    assert source.state.ownership.owned[min(slots)] and not source.state.ownership.sealed
    kept = record_on(source.state, star)
    assert kept.user.celebrity and kept.celebrity_version == 1
    assert status_syncs(source.state) == [star]


def test_update_settings_skips_sealed_slots(pair) -> None:
    source, _target, _peers = pair
    star, free = users_in_source_slots(source, 2)
    make_famous(source.state, star, 50)
    make_famous(source.state, free, 50)
    source.state.ownership.sealed.add(slot_for_user(star))
    source.ok("UpdateSettings", shard_pb2.UpdateSettingsRequest(celebrity_threshold=5))
    assert not record_on(source.state, star).user.celebrity
    assert record_on(source.state, free).user.celebrity
    assert status_syncs(source.state) == [free]


def test_check_slots_reports_sealed_slots_as_skipped_without_repairing(pair) -> None:
    source, _target, _peers = pair
    sealed_user, open_user = users_in_source_slots(source, 2)
    make_famous(source.state, sealed_user, 7)  # a wrong follower_count: no one follows
    make_famous(source.state, open_user, 7)
    sealed = slot_for_user(sealed_user)
    source.state.ownership.sealed.add(sealed)

    for slots in ([], [sealed, slot_for_user(open_user)]):  # every slot, or named ones
        response = source.ok("CheckSlots", shard_pb2.CheckSlotsRequest(slots=slots, repair=True))
        assert response.findings[0].startswith(f"slots {sealed} skipped")
        assert all(str(sealed_user) not in finding for finding in response.findings)
    assert record_on(source.state, sealed_user).user.follower_count == 7  # not repaired
    assert record_on(source.state, open_user).user.follower_count == 0  # repaired

    source.state.ownership.sealed.discard(sealed)
    response = check_slots(source.state, shard_pb2.CheckSlotsRequest(slots=[sealed], repair=True))
    assert response.repaired == 1 and not any("skipped" in f for f in response.findings)


def test_a_threshold_given_at_start_skips_the_slots_of_an_unsettled_hand_over(pair) -> None:
    """A restart with a new threshold while a hand-over is unsettled: the
    flip of a user in the recorded slots waits for settling (the target may
    own them), the others flip at once; settling that keeps the slots
    re-evaluates them."""
    source, _target, peers = pair
    star, other = users_in_source_slots(source, 2)
    make_famous(source.state, star, 50)
    make_famous(source.state, other, 50)
    migration.record_handover(source.state, move_request({slot_for_user(star)}))
    peers.refuse_assign = True  # the target never took the slots: settling keeps them

    state = source.reopen().state
    seal_pending_handover(state)
    state.settings.celebrity_threshold = 5  # as a --celebrity-threshold flag does
    reevaluate_all(state)
    assert not record_on(state, star).user.celebrity
    assert record_on(state, other).user.celebrity

    asyncio.run(settle_at_start(state, peers))  # type: ignore[arg-type]
    assert record_on(state, star).user.celebrity
    assert not state.ownership.sealed


# one hand-over at a time, and no slot taken back while its drop runs -------------


def test_slots_being_dropped_are_not_taken_back_until_the_drop_ends(pair) -> None:
    """A move cut short while the source drops its copy leaves the drop
    running; moving the slots straight back would have it delete what the
    move back imports. The source refuses them (UNAVAILABLE) until then."""
    source, target, peers = pair
    (user,) = users_in_source_slots(source, 1)
    slots = {slot_for_user(user)}
    fill(source.state, min(slots), 3 * BATCH_KEYS)
    before = slot_keys(source.state, slots)
    back = shard_pb2.MigrateSlotsRequest(
        slots=sorted(slots),
        target_shard=0,
        new_map=shard_pb2.SlotMap(version=3, addresses=ADDRESSES, owners=HALF),
    )

    async def scenario() -> None:
        await run_move(source.state, peers, move_request(slots), stop_at="deleting source copy")
        assert pending_handover(source.state) is not None  # the drop still runs
        with pytest.raises(ServiceError) as refused:
            await run_move(target, LocalPeers(source.state), back)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        assert f"UNAVAILABLE: shard 0 is still dropping its copy of slots {min(slots)}" in (
            refused.value.message
        )
        await settled(source.state)
        await run_move(target, LocalPeers(source.state), back)

    asyncio.run(scenario())
    assert source.state.ownership.owned[min(slots)]
    assert slot_keys(source.state, slots) == before


def test_a_map_giving_back_slots_being_dropped_is_refused(pair) -> None:
    source, _target, _peers = pair
    (user,) = users_in_source_slots(source, 1)
    slot = slot_for_user(user)
    migration.record_handover(source.state, move_request({slot}))  # as a drop in progress
    owners = list(HALF)
    owners[SLOT_COUNT - 1] = 0  # gives shard 0 another slot, not the one being dropped
    source.ok("AssignSlots", shard_pb2.AssignSlotsRequest(slot_map=map_with(owners, 3)))
    owners = [1] * SLOT_COUNT
    owners[slot] = 0  # ... and this one hands it the slot it is dropping
    source.state.ownership.owned[slot] = 0  # the hand-over took it away
    details = source.fails(
        "AssignSlots",
        shard_pb2.AssignSlotsRequest(slot_map=map_with(owners, 4)),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert f"still dropping its copy of slots {slot}" in details


def map_with(owners: list[int], version: int) -> shard_pb2.SlotMap:
    return shard_pb2.SlotMap(version=version, addresses=ADDRESSES, owners=owners)


def test_a_second_move_waits_for_the_first_to_settle(pair) -> None:
    """A move whose hand-over is unsettled (its target did not answer) keeps
    its record until it settles; a second move must not write over it."""
    source, _target, peers = pair
    first, second = users_in_source_slots(source, 2)
    unsettled = move_request({slot_for_user(first)})
    migration.record_handover(source.state, unsettled)
    source.state.ownership.sealed.add(slot_for_user(first))
    with pytest.raises(ServiceError) as refused:
        asyncio.run(run_move(source.state, peers, move_request({slot_for_user(second)})))
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"has not settled the hand-over of slots {slot_for_user(first)}" in (
        refused.value.message
    )
    assert pending_handover(source.state) == unsettled


def test_shutdown_stops_a_running_drop_and_the_next_start_finishes_it(pair) -> None:
    source, _target, peers = pair
    (user,) = users_in_source_slots(source, 1)
    slots = {slot_for_user(user)}
    fill(source.state, min(slots), 3 * BATCH_KEYS)

    async def scenario() -> None:
        await run_move(source.state, peers, move_request(slots), stop_at="deleting source copy")
        await migration.stop_background()  # what a stopping shard does before closing its store

    asyncio.run(scenario())
    assert pending_handover(source.state) is not None
    state = source.reopen().state
    seal_pending_handover(state)
    asyncio.run(settle_at_start(state, peers))  # type: ignore[arg-type]
    assert slot_keys(state, slots) == {} and pending_handover(state) is None


# G: fan-out parked while the slots are frozen opens them again ------------------


class ParkedWhileFrozen:
    """Stands for a destination that stops answering just as the slots
    freeze: the first check made while they are frozen finds fan-out for
    them parked, and it stays parked until ``drain`` (the destination back).
    Records whether the slots took writes while it was parked."""

    def __init__(self, state: ShardState, slots: set[int]) -> None:
        self.state, self.slots = state, slots
        self.parked = False
        self.parked_once = False
        self.open_while_parked = False

    def frozen(self) -> bool:
        return any(slot in self.state.ownership.frozen for slot in self.slots)

    def needs(self, slots: set[int]) -> bool:
        if self.frozen() and not self.parked_once:
            self.parked = self.parked_once = True
        if self.parked and not self.frozen():
            self.open_while_parked = True
        return self.parked and bool(slots & self.slots)

    def destinations(self) -> list[int]:
        return [2] if self.parked else set()


def test_fanout_parked_while_frozen_opens_the_slots_until_it_drains(pair, monkeypatch) -> None:
    """The slots do not stay frozen (their users refused) for as long as a
    down destination keeps fan-out for them parked: they are served again
    meanwhile, and frozen anew once it drained."""
    source, target, peers = pair
    users = users_in_source_slots(source, 2)
    slots = {slot_for_user(u) for u in users}
    expected = slot_keys(source.state, slots)
    parked = ParkedWhileFrozen(source.state, slots)
    monkeypatch.setattr(source.state.parked, "needs", parked.needs)
    monkeypatch.setattr(source.state.parked, "destinations", parked.destinations)

    async def scenario() -> list[str]:
        async def destination_back() -> None:
            while not parked.parked_once:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            parked.parked = False

        back = asyncio.create_task(destination_back())
        steps = await run_move(source.state, peers, move_request(slots))
        await back
        await settled(source.state)
        return steps

    steps = asyncio.run(scenario())
    assert parked.open_while_parked
    assert steps[-1] == f"moved {len(slots)} slots to shard 1"
    assert slot_keys(target, slots) == expected and slot_keys(source.state, slots) == {}


def test_fanout_parked_while_frozen_past_the_deadline_fails_naming_the_shard(
    pair, monkeypatch
) -> None:
    source, _target, peers = pair
    (user,) = users_in_source_slots(source, 1)
    slots = {slot_for_user(user)}
    parked = ParkedWhileFrozen(source.state, slots)
    monkeypatch.setattr(source.state.parked, "needs", parked.needs)
    monkeypatch.setattr(source.state.parked, "destinations", parked.destinations)
    monkeypatch.setattr(migration, "FREEZE_WAIT_S", 0.3)

    with pytest.raises(ServiceError) as failed:
        asyncio.run(run_move(source.state, peers, move_request(slots)))

    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert "parked for shard(s) 2" in failed.value.message
    assert parked.open_while_parked
    ownership = source.state.ownership
    assert ownership.owned[min(slots)] and not ownership.frozen and not ownership.sealed


def test_a_long_wait_for_parked_fanout_leaves_the_freeze_its_own_time(pair, monkeypatch) -> None:
    """Parked fan-out held the move for most of FREEZE_WAIT_S before the
    freeze; the frozen wait for queued fan-out still gets its whole window."""
    source, _target, peers = pair
    (user,) = users_in_source_slots(source, 1)
    slots = {slot_for_user(user)}
    monkeypatch.setattr(migration, "FREEZE_WAIT_S", 0.5)
    ownership = source.state.ownership
    held: dict[str, float] = {}

    def needs(asked: set[int]) -> bool:  # parked for 0.4 s, before the freeze
        held.setdefault("parked_from", time.monotonic())
        return time.monotonic() - held["parked_from"] < 0.4

    def queued() -> set[int]:  # queued for 0.3 s once frozen
        if not any(slot in ownership.frozen for slot in slots):
            return set()
        held.setdefault("frozen_from", time.monotonic())
        return {1} if time.monotonic() - held["frozen_from"] < 0.3 else set()

    monkeypatch.setattr(source.state.parked, "needs", needs)
    queue_records(monkeypatch, source.state, queued)

    steps = asyncio.run(run_move(source.state, peers, move_request(slots)))

    assert steps[-1] == "moved 1 slots to shard 1"
    assert held["frozen_from"] - held["parked_from"] >= 0.4


def test_a_second_move_from_the_same_source_is_refused_while_one_runs(pair) -> None:
    """Two routers (or two operators) may start moves from one source at
    once; the shard takes one at a time and names the one it is running."""
    source, target, peers = pair
    first_users, second_users = users_in_source_slots(source, 2)
    first, second = {slot_for_user(first_users)}, {slot_for_user(second_users)}
    refused: list[ServiceError] = []

    async def second_move() -> None:
        try:
            await run_move(source.state, peers, move_request(second, version=3))
        except ServiceError as exc:
            refused.append(exc)

    async def scenario() -> list[str]:
        peers.on_first_import = second_move  # while the first copies its snapshot
        steps = await run_move(source.state, peers, move_request(first))
        await settled(source.state)
        return steps

    steps = asyncio.run(scenario())

    assert steps[-1] == "moved 1 slots to shard 1"
    assert [exc.code for exc in refused] == [grpc.StatusCode.FAILED_PRECONDITION]
    assert f"already moving slots {min(first)} to shard 1" in refused[0].message
    assert target.ownership.owned[min(first)] and not target.ownership.owned[min(second)]
    # the first move over, the next one runs
    peers.on_first_import = None
    steps = asyncio.run(run_move(source.state, peers, move_request(second, version=3)))
    assert steps[-1] == "moved 1 slots to shard 1"


def test_a_cancelled_move_lets_the_next_one_run(pair) -> None:
    source, _target, peers = pair
    first_user, second_user = users_in_source_slots(source, 2)
    first, second = {slot_for_user(first_user)}, {slot_for_user(second_user)}

    asyncio.run(run_move(source.state, peers, move_request(first), stop_at="catching up"))

    assert source.state.moving is None
    steps = asyncio.run(run_move(source.state, peers, move_request(second, version=3)))
    assert steps[-1] == "moved 1 slots to shard 1"


def test_a_source_whose_re_check_failed_vouches_for_nothing(pair, monkeypatch) -> None:
    """A move failed in its last phase while the threshold dropped, and
    re-checking the slot it gave back failed (a disk error): the star there
    was never checked against the new threshold, so the next move must not
    vouch for it; the target checks it."""
    source, target, peers = pair
    (star,) = users_in_source_slots(source, 1)
    slot = slot_for_user(star)
    make_famous(source.state, star, 50)
    source.state.ownership.sealed.add(slot)  # the failing move's last phase
    lower = shard_pb2.UpdateSettingsRequest(celebrity_threshold=5)
    asyncio.run(source.servicer.UpdateSettings(lower, None))  # skips the sealed slot
    asyncio.run(peers.servicer.UpdateSettings(lower, None))

    def disk_error(*_args, **_kwargs):
        raise OSError("disk error")

    monkeypatch.setattr(migration, "reevaluate_slots", disk_error)
    migration.release_slots(source.state, {slot})
    monkeypatch.undo()
    assert not record_on(source.state, star).user.celebrity  # left unchecked

    asyncio.run(run_move(source.state, peers, move_request({slot})))

    assert record_on(target, star).user.celebrity, "the target trusted an unchecked slot"


def test_a_threshold_change_cut_short_is_applied_at_the_next_start(pair, monkeypatch) -> None:
    """UpdateSettings saves the new threshold before it re-checks the users;
    a crash between the two leaves users unchecked, which the next start
    re-checks rather than trusting that the saved threshold was applied."""
    source, _target, _peers = pair
    (star,) = users_in_source_slots(source, 1)
    make_famous(source.state, star, 50)

    def crash(*_args, **_kwargs):
        raise Killed

    monkeypatch.setattr(celebrity, "reevaluate_slots", crash)
    with pytest.raises(grpc.aio.AioRpcError):  # the call fails: INTERNAL
        asyncio.run(
            source.servicer.UpdateSettings(
                shard_pb2.UpdateSettingsRequest(celebrity_threshold=5), PeerContext()
            )
        )
    monkeypatch.undo()
    assert celebrity.vouched_threshold(source.state) is None  # no move vouches meanwhile

    restarted = source.reopen()
    state = restarted.state
    assert state.settings.celebrity_threshold == 5 and state.threshold_unapplied
    reevaluate_all(state)  # what the start does when the threshold is unapplied
    assert record_on(state, star).user.celebrity
    assert not state.threshold_unapplied
    assert not restarted.reopen().state.threshold_unapplied  # the mark is on disk


class TimedFanout:
    """Fan-out for the moving slots on a timeline that starts at the first
    freeze: a round queued for them until ``queued_s`` (whether or not the
    slots are frozen), then its share parked until ``parked_s``. Records
    each freeze and whether the slots were frozen while the round or the
    parked share held them past the first freeze's window."""

    def __init__(self, state: ShardState, slots: set[int], queued_s: float, parked_s: float):
        self.state, self.slots = state, slots
        self.queued_s, self.parked_s = queued_s, parked_s
        self.first_frozen: float | None = None
        self.freezes = 0
        self.was_frozen = False

    def elapsed(self) -> float:
        frozen = any(slot in self.state.ownership.frozen for slot in self.slots)
        if frozen and not self.was_frozen:
            self.freezes += 1
        self.was_frozen = frozen
        if frozen and self.first_frozen is None:
            self.first_frozen = time.monotonic()
        return -1.0 if self.first_frozen is None else time.monotonic() - self.first_frozen

    def queued(self) -> set[int]:
        return {1} if 0 <= self.elapsed() < self.queued_s else set()

    def needs(self, _slots: set[int]) -> bool:
        return self.queued_s <= self.elapsed() < self.parked_s

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(self.state.parked, "needs", self.needs)
        monkeypatch.setattr(self.state.parked, "destinations", lambda: [2])
        queue_records(monkeypatch, self.state, self.queued)


def test_a_round_that_parks_late_in_a_freeze_leaves_the_parked_wait_its_time(
    pair, monkeypatch
) -> None:
    """A round to a destination that stopped answering held 0.4 s of a 0.5 s
    freeze, then parked its share for 0.2 s: the parked wait still has its
    own 0.5 s (its budget was once spent by the freeze)."""
    source, target, peers = pair
    (user,) = users_in_source_slots(source, 1)
    slots = {slot_for_user(user)}
    monkeypatch.setattr(migration, "FREEZE_WAIT_S", 0.5)
    fanout = TimedFanout(source.state, slots, queued_s=0.4, parked_s=0.6)
    fanout.install(monkeypatch)

    steps = asyncio.run(run_move(source.state, peers, move_request(slots)))

    assert steps[-1] == "moved 1 slots to shard 1"
    assert fanout.freezes == 2
    assert all(target.ownership.owned[s] for s in slots)


def test_a_round_outlasting_a_freeze_is_waited_for_with_the_slots_served(pair, monkeypatch) -> None:
    """The round still runs when the 0.5 s freeze is up (a hung destination
    parks a share only after DELIVER_TIMEOUT_S): the slots are served again
    until it has parked and drained, then frozen anew, instead of the move
    failing with the slots refused all along."""
    source, _target, peers = pair
    (user,) = users_in_source_slots(source, 1)
    slots = {slot_for_user(user)}
    monkeypatch.setattr(migration, "FREEZE_WAIT_S", 0.5)
    monkeypatch.setattr(migration, "ROUND_WAIT_S", 1.0)
    fanout = TimedFanout(source.state, slots, queued_s=0.8, parked_s=1.0)
    fanout.install(monkeypatch)
    served_while_held: list[bool] = []
    real_needs = fanout.needs

    def needs(asked: set[int]) -> bool:
        held = real_needs(asked)
        if held:
            served_while_held.append(not fanout.was_frozen)
        return held

    monkeypatch.setattr(source.state.parked, "needs", needs)

    steps = asyncio.run(run_move(source.state, peers, move_request(slots)))

    assert steps[-1] == "moved 1 slots to shard 1"
    assert fanout.freezes == 2
    assert served_while_held and all(served_while_held)


def test_a_move_frozen_and_reopened_max_freezes_times_fails_naming_the_shard(
    pair, monkeypatch
) -> None:
    """A destination that goes down at every freeze and comes back as soon
    as the slots are served again cannot keep the move going for good."""
    source, _target, peers = pair
    (user,) = users_in_source_slots(source, 1)
    slots = {slot_for_user(user)}
    ownership = source.state.ownership
    freezes: list[float] = []

    def needs(_asked: set[int]) -> bool:  # parked whenever the slots are frozen
        frozen = any(slot in ownership.frozen for slot in slots)
        if frozen:
            freezes.append(time.monotonic())
        return frozen

    monkeypatch.setattr(source.state.parked, "needs", needs)
    monkeypatch.setattr(source.state.parked, "destinations", lambda: [2])

    with pytest.raises(ServiceError) as failed:
        asyncio.run(run_move(source.state, peers, move_request(slots)))

    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert f"frozen {migration.MAX_FREEZES} times" in failed.value.message
    assert "parked for shard(s) 2" in failed.value.message
    assert len(freezes) == migration.MAX_FREEZES
    assert ownership.owned[min(slots)] and not ownership.frozen and not ownership.sealed


def start_like_main(state: ShardState) -> None:
    """shard/main.py serve(): seal a recorded hand-over, then re-check all
    users only if the threshold is not marked applied."""
    seal_pending_handover(state)
    if state.threshold_unapplied:
        reevaluate_all(state)


def test_a_threshold_change_while_a_slot_is_sealed_is_applied_after_a_kill(pair, monkeypatch):
    """The threshold drops while the moving slot is sealed, before the
    hand-over record is written (during the last send), and the re-check
    skips that slot; then kill -9, so the failed move's re-check of the slot
    (in memory) never runs. The start must not trust the new threshold as
    applied: it re-checks the slot's users."""
    source, _target, peers = pair
    (star,) = users_in_source_slots(source, 1)
    make_famous(source.state, star, 50)
    slot = slot_for_user(star)
    real_import = LocalStub.ImportEntries

    async def import_entries(self, request, timeout):
        if slot in source.state.ownership.sealed:  # the last send: sealed, no record yet
            await source.servicer.UpdateSettings(
                shard_pb2.UpdateSettingsRequest(celebrity_threshold=5), None
            )
            raise Killed
        return await real_import(self, request, timeout)

    def killed(*_args, **_kwargs):  # kill -9: the except clause never runs
        raise Killed

    monkeypatch.setattr(LocalStub, "ImportEntries", import_entries)
    monkeypatch.setattr(migration, "release_slots", killed)
    stream = migration.SlotMigrator(source.state, peers).migrate(move_request({slot}))

    async def drive():
        async for _ in stream:
            pass

    with pytest.raises(Killed):
        asyncio.run(drive())
    monkeypatch.undo()

    state = source.reopen().state
    start_like_main(state)
    assert state.settings.celebrity_threshold == 5
    assert record_on(state, star).user.celebrity, "50 followers under 5, never re-checked"
    assert not state.threshold_unapplied


def test_a_re_check_cut_short_is_redone_even_if_the_old_threshold_comes_back(pair, monkeypatch):
    """A new threshold of 5 flips some users, then the shard dies part-way
    through the re-check; it restarts with --celebrity-threshold 10000 (a
    unit file that always passes the flag), the threshold applied before.
    The users flipped under 5 must be checked again under 10000."""
    source, _target, _peers = pair
    users = users_in_source_slots(source, 2)
    for user in users:
        make_famous(source.state, user, 50)
    first = min(slot_for_user(u) for u in users)
    real = celebrity.reevaluate_slots

    def dies_part_way(state, slots, batch=500):
        real(state, [s for s in slots if s <= first], batch)  # flips committed
        raise Killed

    monkeypatch.setattr(celebrity, "reevaluate_slots", dies_part_way)
    with pytest.raises(grpc.aio.AioRpcError):
        asyncio.run(
            source.servicer.UpdateSettings(
                shard_pb2.UpdateSettingsRequest(celebrity_threshold=5), PeerContext()
            )
        )
    monkeypatch.undo()
    flipped = [u for u in users if record_on(source.state, u).user.celebrity]
    assert flipped  # part of the re-check was applied before the "crash"
    source.close()

    state = ShardState.open(
        str(source.data_dir), 0, ShardSettings(), overrides={"celebrity_threshold": 10_000}
    )
    try:
        start_like_main(state)
        assert [u for u in flipped if record_on(state, u).user.celebrity] == [], (
            "a 50-follower celebrity under threshold 10000"
        )
    finally:
        state.store.close()


def test_polls_behind_a_slow_scan_are_spaced_to_a_tenth_of_the_loop(pair, monkeypatch) -> None:
    """A wait whose check scans a big outbox backlog (here each check takes
    50 ms of a fake clock) sleeps nine times that between checks, so the
    fan-out that drains the backlog keeps the event loop nine tenths of the
    time; a cheap check is still polled every ``interval``."""
    source, _target, peers = pair
    clock = [0.0]
    slept: list[float] = []
    monkeypatch.setattr(migration.time, "monotonic", lambda: clock[0])

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(migration.asyncio, "sleep", sleep)

    def check(cost: float, answer_after: int):
        calls = [0]

        def outcome() -> str | None:
            calls[0] += 1
            clock[0] += cost
            return "done" if calls[0] > answer_after else None

        return outcome

    migrator = SlotMigrator(source.state, peers)  # type: ignore[arg-type]
    answer = asyncio.run(migrator._wait_until(check(0.05, 3), math.inf, interval=0.01))
    assert answer == "done" and slept == pytest.approx([0.45] * 3)
    slept.clear()
    asyncio.run(migrator._wait_until(check(0.0001, 3), math.inf, interval=0.01))
    assert slept == pytest.approx([0.01] * 3)
    slept.clear()  # a very slow check: the gap stops growing, a deadline is not overshot far
    asyncio.run(migrator._wait_until(check(0.5, 1), math.inf, interval=0.01))
    assert slept == pytest.approx([migration.MAX_POLL_GAP_S])


def test_a_source_that_took_another_map_during_the_move_rolls_it_back(pair) -> None:
    """Another change's map (same version, other contents) reached the source
    while it copied: handing over would leave the source's map giving it
    the slots it then deletes (two owners, the data gone). It rolls back."""
    source, target, peers = pair
    (user,) = users_in_source_slots(source, 1)
    slots = {slot_for_user(user)}
    other = move_request({(min(slots) + 1) % (SLOT_COUNT // 2)}).new_map  # version 2 too

    async def another_change() -> None:
        source.state.ownership.adopt(other)

    peers.on_first_import = another_change
    with pytest.raises(ServiceError) as refused:
        asyncio.run(run_move(source.state, peers, move_request(slots)))

    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "took slot map version 2 while moving slots to shard 1" in refused.value.message
    assert all(source.state.ownership.owned[s] for s in slots)
    assert not any(target.ownership.owned[s] for s in slots)
    assert pending_handover(source.state) is None
    assert not source.state.ownership.frozen and not source.state.ownership.sealed


def test_a_source_that_takes_another_map_during_the_hand_over_keeps_its_copy_sealed(
    pair,
) -> None:
    """The other map arrives while the target adopts: the hand-over happened,
    but the source's own map still gives it the slots. It used to drop its
    copy anyway and serve the slots empty (two owners, the data gone); now
    it keeps the copy sealed, claims the slots no more, and drops it once a
    map that gives them away arrives (a router's mend)."""
    source, target, peers = pair
    (user,) = users_in_source_slots(source, 1)
    slots = {slot_for_user(user)}
    other = move_request({(min(slots) + 1) % (SLOT_COUNT // 2)}).new_map  # version 2 too
    expected = slot_keys(source.state, slots)

    async def another_change() -> None:
        source.state.ownership.adopt(other)

    peers.on_assign = another_change

    async def scenario() -> None:
        with pytest.raises(ServiceError):
            await run_move(source.state, peers, move_request(slots))
        await asyncio.sleep(0.3)  # the settle retries in the background
        ownership = source.state.ownership
        assert slot_keys(source.state, slots) == expected, "the copy was dropped"
        assert all(s in ownership.sealed for s in slots)
        claimed = {s for r in ownership.info().owned for s in range(r.start, r.end + 1)}
        assert not claimed & slots
        mended = move_request(slots, version=3).new_map  # what a router's mend publishes
        ownership.adopt(mended)
        await settled(source.state, timeout_s=10)

    asyncio.run(scenario())

    assert slot_keys(source.state, slots) == {}
    assert all(target.ownership.owned[s] for s in slots)
    assert not any(source.state.ownership.owned[s] for s in slots)


def test_a_move_waits_on_its_slots_queued_records_and_not_on_others(pair) -> None:
    """The outbox's own records, not a stand-in: fan-out for another slot
    does not hold the move; fan-out for a moving slot holds it, served,
    until it is delivered."""
    source, _target, peers = pair
    mover, other = users_in_source_slots(source, 2)
    slots = {slot_for_user(mover)}
    outbox = source.state.outbox
    ownership = source.state.ownership
    txn = source.state.store.txn()
    elsewhere = outbox.append(txn, add_follower_record(followee=1, follower=other))
    mine = outbox.append(txn, add_follower_record(followee=1, follower=mover))
    txn.commit()
    seen: dict[str, Any] = {}

    async def deliver_later() -> None:
        await asyncio.sleep(0.3)
        seen["owned"] = all(ownership.owned[slot] for slot in slots)
        seen["frozen"] = any(slot in ownership.frozen for slot in slots)
        seen["delivered_at"] = time.monotonic()
        outbox.finish([mine], {})

    async def scenario() -> list[str]:
        delivery = asyncio.create_task(deliver_later())
        steps = await run_move(source.state, peers, move_request(slots))
        seen["moved_at"] = time.monotonic()
        await delivery
        return steps

    steps = asyncio.run(scenario())

    assert steps[-1] == "moved 1 slots to shard 1"
    assert seen["owned"] and not seen["frozen"], (
        "the slot left (or froze) while its record was queued"
    )
    assert seen["moved_at"] > seen["delivered_at"]
    assert outbox.queued_for({slot_for_user(other)}) == {elsewhere}


def test_fanout_queued_before_the_freeze_is_waited_for_with_the_slots_served(
    pair, monkeypatch
) -> None:
    """A backlog for the moving slots (here one record, queued for 0.3 s)
    is delivered while they are still served; the freeze then waits only
    for what came since."""
    source, _target, peers = pair
    (user,) = users_in_source_slots(source, 1)
    slots = {slot_for_user(user)}
    ownership = source.state.ownership
    began = time.monotonic()
    frozen_while_queued: list[bool] = []

    def queued() -> set[int]:
        if time.monotonic() - began >= 0.3:
            return set()
        frozen_while_queued.append(any(slot in ownership.frozen for slot in slots))
        return {1}

    queue_records(monkeypatch, source.state, queued)

    steps = asyncio.run(run_move(source.state, peers, move_request(slots)))

    assert steps[-1] == "moved 1 slots to shard 1"
    assert frozen_while_queued and not any(frozen_while_queued)


def test_writes_taken_during_the_served_waits_are_sent_before_the_freeze(pair, monkeypatch) -> None:
    """The slots take writes while the move waits, served, for their queued
    fan-out; those go to the target before the slots freeze, so the freeze
    sends only what came in the last moment."""
    source, _target, peers = pair
    (user,) = users_in_source_slots(source, 1)
    slot = slot_for_user(user)
    ownership = source.state.ownership
    began = time.monotonic()
    wrote = [False]

    def queued() -> set[int]:
        if time.monotonic() - began >= 0.3:
            return set()
        if not wrote[0]:  # the slot keeps taking writes while served
            wrote[0] = True
            fill(source.state, slot, 6_000)
        return {1}

    queue_records(monkeypatch, source.state, queued)
    sent_frozen = [0]
    real = LocalStub.ImportEntries

    async def counting(self, request, timeout):
        if slot in ownership.frozen:
            sent_frozen[0] += len(request.entries)
        return await real(self, request, timeout)

    monkeypatch.setattr(LocalStub, "ImportEntries", counting)

    steps = asyncio.run(run_move(source.state, peers, move_request({slot})))

    assert steps[-1] == "moved 1 slots to shard 1"
    assert sent_frozen[0] < BATCH_KEYS // 4, f"{sent_frozen[0]} entries sent frozen"


def test_draining_the_queue_before_the_freeze_leaves_the_later_rounds_their_time(
    pair, monkeypatch
) -> None:
    """Fan-out queued before the freeze took 0.8 s of a 1 s ROUND_WAIT_S to
    drain; a round that then outlasts a freeze still gets its own 1 s."""
    source, _target, peers = pair
    (user,) = users_in_source_slots(source, 1)
    slots = {slot_for_user(user)}
    ownership = source.state.ownership
    monkeypatch.setattr(migration, "FREEZE_WAIT_S", 0.3)
    monkeypatch.setattr(migration, "ROUND_WAIT_S", 1.0)
    began = time.monotonic()
    first_frozen: list[float] = []

    def queued() -> set[int]:
        now = time.monotonic()
        if not first_frozen and any(slot in ownership.frozen for slot in slots):
            first_frozen.append(now)
        if now - began < 0.8:
            return {1}  # queued before the move froze anything
        if first_frozen and now - first_frozen[0] < 0.9:
            return {2}  # a round that outlasts the 0.3 s freeze
        return set()

    queue_records(monkeypatch, source.state, queued)

    steps = asyncio.run(run_move(source.state, peers, move_request(slots)))

    assert steps[-1] == "moved 1 slots to shard 1"


def test_the_applied_mark_comes_back_once_the_slots_a_re_check_skipped_have_left(
    pair, monkeypatch
) -> None:
    """A threshold change skipped a slot sealed for a move, so moves stop
    vouching; once that slot is handed over every user the source still owns
    is checked again, and the next move vouches (its target reads no user)."""
    source, _target, peers = pair
    _star, slots = star_of_a_moving_slot(source, peers)  # threshold 5 set while sealed
    asyncio.run(run_move(source.state, peers, move_request(slots)))
    peers.on_assign = None
    later = users_in_source_slots(source, 2, stem="later")
    later_slots = {slot_for_user(u) for u in later} - slots
    reevaluated = reevaluated_on_adopting(monkeypatch)

    asyncio.run(run_move(source.state, peers, move_request(later_slots, version=3)))

    assert celebrity.vouched_threshold(source.state) == 5
    assert reevaluated == []


def test_the_applied_mark_comes_back_once_a_failed_move_re_checked_its_slots(pair) -> None:
    source, _target, peers = pair
    star, slots = star_of_a_moving_slot(source, peers)  # threshold 5 set while sealed
    peers.refuse_assign = True
    with pytest.raises(ServiceError):
        asyncio.run(run_move(source.state, peers, move_request(slots)))

    assert record_on(source.state, star).user.celebrity  # re-checked on release
    assert celebrity.vouched_threshold(source.state) == 5
    assert not source.reopen().state.threshold_unapplied


def threshold_of(threshold: int) -> shard_pb2.UpdateSettingsRequest:
    return shard_pb2.UpdateSettingsRequest(celebrity_threshold=threshold)


def test_a_failed_re_check_back_to_the_owed_threshold_is_not_marked_applied(
    pair, monkeypatch
) -> None:
    """The threshold goes 5 (while a slot is sealed: its re-check is owed),
    10,000, then 5 again with a re-check that fails, all while the source
    drops the handed-over slot; settling that slot must not mark 5 applied,
    since a user of another slot was never checked under it."""
    source, _target, peers = pair
    # threshold 5 set on both shards while the star's slot is sealed: owed = (5, {S})
    star, slots = star_of_a_moving_slot(source, peers)
    other = next(
        u for u in users_in_source_slots(source, 3, stem="o") if slot_for_user(u) not in slots
    )
    make_famous(source.state, other, 50)
    real_drop = migration._drop_slots
    real_reevaluate = celebrity.reevaluate_slots
    done = [False]

    async def drop_with_settings_meanwhile(state, slots_):
        # UpdateSettings calls served while the source drops its copy
        # (the drop yields to the loop between batches)
        if not done[0]:
            done[0] = True
            for servicer in (source.servicer, peers.servicer):
                await servicer.UpdateSettings(threshold_of(10_000), PeerContext())  # succeeds
            await peers.servicer.UpdateSettings(threshold_of(5), PeerContext())

            def disk_error(*_a, **_k):
                raise OSError("disk error")

            monkeypatch.setattr(celebrity, "reevaluate_slots", disk_error)
            with pytest.raises(grpc.aio.AioRpcError):  # the source's re-check fails
                await source.servicer.UpdateSettings(threshold_of(5), PeerContext())
            monkeypatch.setattr(celebrity, "reevaluate_slots", real_reevaluate)
            assert celebrity.vouched_threshold(source.state) is None
        await real_drop(state, slots_)

    monkeypatch.setattr(migration, "_drop_slots", drop_with_settings_meanwhile)
    asyncio.run(run_move(source.state, peers, move_request(slots)))
    peers.on_assign = None

    assert source.state.settings.celebrity_threshold == 5
    assert not record_on(source.state, other).user.celebrity  # never re-checked under 5
    assert celebrity.vouched_threshold(source.state) is None, (
        "the source vouches for threshold 5 though its re-check under 5 failed"
    )
