"""What operators do to a running cluster while a fault test or the soak
runs (slot moves, celebrity threshold changes, each on a timer), and the
checks of what they were promised afterwards.

An action that a kill cuts short fails with a retryable code and is
counted; what must hold afterwards: each slot is owned by one shard, each
chunk wholly moved or wholly left, every user's celebrity flag agrees with
the last threshold, and no acknowledged write is lost (the caller's oracle
checks that part).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from client.admin_client import AdminClient
from client.errors import MurmurError
from server.slot_moves import CHUNK
from shard.settings import is_celebrity

# codes an action may end with when a process it needs is killed under it
INTERRUPTED = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}
# ...and the refusal a source gives while a hand-over that a kill interrupted
# is still being settled (it retries until the target answers)
UNSETTLED = "has not settled the hand-over"


# a move may still fail this long after a restart: the source settles an
# interrupted hand-over, and routers and shards reconnect
AFTERMATH_S = 10.0


class KillWindows:
    """When a process was down (from its kill to its restart), so that a
    failed move is excused only by a kill that overlapped it."""

    def __init__(self) -> None:
        self._windows: list[list[float]] = []
        self._lock = threading.Lock()

    @contextmanager
    def down(self) -> Iterator[None]:
        window = [time.monotonic(), float("inf")]
        with self._lock:
            self._windows.append(window)
        try:
            yield
        finally:
            window[1] = time.monotonic()

    def overlap(self, start: float, end: float) -> bool:
        with self._lock:
            return any(
                began <= end and start <= ended + AFTERMATH_S for began, ended in self._windows
            )


def interrupted(exc: MurmurError) -> bool:
    """A failure a kill can explain, rather than a fault of the move itself."""
    name = exc.code.name
    return name in INTERRUPTED or (name == "FAILED_PRECONDITION" and UNSETTLED in str(exc))


def slot_holders(cluster: Any, shards: int = 3) -> dict[int, list[int]]:
    """Slot -> the shards whose own stored map says they own it."""
    holders: dict[int, list[int]] = defaultdict(list)
    for index in range(shards):
        info = cluster.shard_info(index)
        for run in info.owned:
            for slot in range(run.start, run.end + 1):
                holders[slot].append(info.shard_id)
    return holders


def owned_slots(admin: AdminClient) -> dict[int, list[int]]:
    """Shard -> the slots the router says it owns."""
    return {
        shard.shard_id: [s for run in shard.slots for s in range(run.start, run.end + 1)]
        for shard in admin.get_cluster_status().shards
    }


class OperatorLoop:
    """Every ``every_s`` seconds, one operator action (``act``) through the
    router's Admin API, on its own thread.

    ``stop`` lets the action in progress finish (or fail) first.
    ``outcomes`` counts each success (under ``done``) and each failure's
    code; a failure that no kill in ``kills`` overlapped, or of a kind no
    kill explains (``interrupted``), or any other exception, is recorded in
    ``failure`` and stops the loop."""

    done = "done"

    def __init__(
        self,
        target: Callable[[], str],
        token: str,
        every_s: float,
        kills: KillWindows,
        seed: int = 5,
    ):
        self.target = target
        self.token = token
        self.every_s = every_s
        self.kills = kills
        self.rng = random.Random(seed)
        self.outcomes: Counter = Counter()
        self.failure: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def act(self, admin: AdminClient) -> None:
        raise NotImplementedError

    def start(self) -> OperatorLoop:
        name = type(self).__name__
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 120.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.failure = f"{self.done}: still running {timeout:.0f} s after the stop"

    def _run(self) -> None:
        while not self._stop.wait(self.every_s) and self.failure is None:
            started = time.monotonic()
            try:
                with AdminClient(self.target(), self.token, timeout=10.0) as admin:
                    self.act(admin)
                self.outcomes[self.done] += 1
            except MurmurError as exc:
                self.outcomes[exc.code.name] += 1
                if not (interrupted(exc) and self.kills.overlap(started, time.monotonic())):
                    self.failure = f"{type(self).__name__} failed with {exc.code.name}: {exc}"
            except Exception as exc:  # a bug of the loop itself must not pass unseen
                self.failure = f"{type(self).__name__} failed: {exc!r}"


class SlotShuffler(OperatorLoop):
    """Moves one or two chunks of random slots from a random shard to another."""

    done = "moved"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots_moved = 0

    def act(self, admin: AdminClient) -> None:
        owned = owned_slots(admin)
        sources = [shard for shard, slots in owned.items() if len(slots) >= CHUNK]
        source = self.rng.choice(sources)
        target = self.rng.choice([shard for shard in owned if shard != source])
        count = min(len(owned[source]), CHUNK * self.rng.randint(1, 2))
        slots = self.rng.sample(owned[source], count)
        for _ in admin.move_slots(slots, target):
            pass
        self.slots_moved += count


class ThresholdFlipper(OperatorLoop):
    """Sets the celebrity threshold to each of ``thresholds`` in turn, so
    that re-checks run while slots move and processes die."""

    done = "changed"

    def __init__(self, *args: Any, thresholds: tuple[int, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.thresholds = thresholds
        self.threshold = thresholds[0]  # the last one asked for

    def act(self, admin: AdminClient) -> None:
        self.threshold = self.thresholds[
            (self.thresholds.index(self.threshold) + 1) % len(self.thresholds)
        ]
        admin.update_settings(celebrity_threshold=self.threshold)

    def settle(self, admin: AdminClient) -> int:
        """Repeat the last threshold until every shard took it (one that was
        down may have missed it); returns it."""
        admin.update_settings(celebrity_threshold=self.threshold)
        return self.threshold


def wrong_statuses(users: dict[int, tuple[bool, int]], threshold: int) -> list[int]:
    """Users whose celebrity flag no threshold rule allows, from user id ->
    (flag, followers): a celebrity under the demotion line, or an ordinary
    account at or over the threshold (in between, either may hold: the
    hysteresis)."""
    return [
        user
        for user, (celebrity, followers) in users.items()
        if celebrity != is_celebrity(celebrity, followers, threshold)
    ]
