"""A whole Murmur cluster in one process, for fast, deterministic tests.

Real ShardServicers on real LevelDBs and the real router servicer, but calls
go through plain awaits instead of sockets, and each shard's fan-out worker
runs only when the test asks (``settle``), so a test can look at the state
before, during and after fan-out.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from murmur.errors import WRONG_SLOT_METADATA, ServiceError
from murmur.slots import even_assignment, slot_for_user
from murmur.v1 import shard_pb2
from server.servicer import MurmurServicer
from server.shard_pool import WrongSlot
from server.slot_map import RoutingTable
from shard.batch_execute import run_calls
from shard.delivery import DeliveryApplier
from shard.fanout import FanoutWorker
from shard.servicer import ShardServicer
from shard.settings import ShardSettings
from shard.state import ShardState


class FakeContext:
    """Enough of grpc.aio.ServicerContext for the servicers."""

    def __init__(self, remaining: float | None = None) -> None:
        self.trailing: tuple = ()
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining

    def set_trailing_metadata(self, trailing: tuple) -> None:
        self.trailing = tuple(trailing)

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        if any(key == WRONG_SLOT_METADATA for key, _ in self.trailing):
            raise WrongSlot(code, message)
        raise ServiceError(code, message)


class InProcessPool:
    """Stands in for the router's ShardPool: calls servicers directly."""

    def __init__(self, table: RoutingTable, servicers: dict[int, ShardServicer]) -> None:
        self.table = table
        self.servicers = servicers
        self.down: set[int] = set()
        self.unreachable: set[int] = set()  # up for the router, but not for other shards
        self.calls: Counter = Counter()  # (method, shard) -> calls
        self.timeouts: list[tuple[str, float | None]] = []  # deadline each call carried

    async def call(self, shard_id: int, method: str, request: Any, timeout: float | None) -> Any:
        if shard_id in self.down:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"shard {shard_id} is unavailable")
        self.calls[method, shard_id] += 1
        self.timeouts.append((method, timeout))
        return await getattr(self.servicers[shard_id], method)(request, FakeContext())


class InProcessPeers:
    """Stands in for PeerShards: a batch runs straight on the target servicer."""

    def __init__(self, pool: InProcessPool) -> None:
        self.pool = pool

    def address(self, shard_id: int) -> str:
        return f"in-process-{shard_id}"

    def stream(self, shard_id: int) -> Any:
        pool = self.pool

        class Stream:
            async def execute(self, calls: list, timeout: float) -> list:
                """Each batched Deliver straight into the target servicer."""
                if shard_id in pool.down or shard_id in pool.unreachable:
                    raise ConnectionError(f"shard {shard_id} is down")
                for call in calls:
                    pool.calls[call.method, shard_id] += 1
                    pool.timeouts.append((call.method, timeout))
                return await run_calls(pool.servicers[shard_id], calls, timeout)

        return Stream()

    async def close(self) -> None:
        return None


def limits_off(settings: dict[str, Any]) -> ShardSettings:
    """The models follow and post thousands of times a second for one user:
    rate limits off unless a test sets them."""
    return ShardSettings(**{"post_rate_limit": 0, "follow_rate_limit": 0, **settings})


class MemoryCluster:
    def __init__(self, root: Path, shards: int = 3, **settings: Any) -> None:
        owners = even_assignment(list(range(shards)))
        slot_map = shard_pb2.SlotMap(
            version=1, addresses={i: f"in-process-{i}" for i in range(shards)}, owners=owners
        )
        self.states: dict[int, ShardState] = {}
        servicers: dict[int, ShardServicer] = {}
        self.appliers: dict[int, DeliveryApplier] = {}
        for shard_id in range(shards):
            state = ShardState.open(str(root / f"shard-{shard_id}"), shard_id, limits_off(settings))
            state.ownership.adopt(slot_map)
            self.states[shard_id] = state
            self.appliers[shard_id] = DeliveryApplier(state)
            servicers[shard_id] = ShardServicer(state, self.appliers[shard_id])
        self.table = RoutingTable(slot_map)
        self.pool = InProcessPool(self.table, servicers)
        self.router = MurmurServicer(self.table, self.pool)  # type: ignore[arg-type]
        peers = InProcessPeers(self.pool)
        self.workers = {
            i: FanoutWorker(self.states[i], self.appliers[i], peers, linger_s=0)  # type: ignore[arg-type]
            for i in range(shards)
        }

    async def call(self, method: str, request: Any, deadline: float | None = None) -> Any:
        """Call the public API as a client would (``deadline``: seconds left)."""
        return await getattr(self.router, method)(request, FakeContext(deadline))

    async def settle(self, max_rounds: int = 10_000) -> int:
        """Run every shard's fan-out worker until all outboxes are empty."""
        rounds = 0
        while rounds < max_rounds:
            worked = False
            for worker in self.workers.values():
                if await worker.run_round():
                    worked = True
                    rounds += 1
                # parked ops go as soon as their destination answers
                if await worker.drain_parked():
                    worked = True
                    rounds += 1
            if not worked:
                return rounds
        raise AssertionError("fan-out did not settle")

    def backlog(self) -> int:
        """Fan-out still to do: queued outbox records and parked ops."""
        return sum(state.outbox.backlog() + state.parked.total() for state in self.states.values())

    def shard_of(self, user_id: int) -> int:
        return self.table.owners[slot_for_user(user_id)]

    def close(self) -> None:
        for state in self.states.values():
            state.store.close()


def run(coro: Any) -> Any:
    return asyncio.get_event_loop_policy().get_event_loop().run_until_complete(coro)
