"""Everything one shard process holds, bundled so each part can reach the others."""

from __future__ import annotations

from dataclasses import dataclass, field

from murmur.ids import IdClock
from murmur.setting_limits import holds_setting
from murmur.v1 import shard_pb2
from shard import keys
from shard.graph import FollowGraph
from shard.inbox import InboxStore
from shard.outbox import Outbox
from shard.ownership import SlotOwnership
from shard.parked import ParkedQueues
from shard.settings import RUNTIME_FIELDS, ShardSettings, to_message
from shard.store import DEFAULT_WRITE_BUFFER_MB, Store
from shard.tweets import TweetStore
from shard.users import UserStore


@dataclass
class ShardState:
    store: Store
    ownership: SlotOwnership
    settings: ShardSettings
    clock: IdClock = field(default_factory=IdClock)

    def __post_init__(self) -> None:
        self.users = UserStore(self.clock)
        self.graph = FollowGraph(self.store)
        self.tweets = TweetStore(self.store, self.clock)
        self.inbox = InboxStore(self.store)
        self.outbox = Outbox(self.store)
        self.parked = ParkedQueues(self.store)
        # the threshold all owned users were last checked against (None:
        # unknown, e.g. a re-check failed part-way); see shard/celebrity.py
        self.threshold_applied: int | None = None
        # (threshold, slots): sealed slots the last re-check skipped, while
        # their move may still give them back (see shard/celebrity.py)
        self.recheck_owed: tuple[int, set[int]] | None = None
        # the slot move this shard is the source of, while it runs
        self.moving: shard_pb2.MigrateSlotsRequest | None = None
        self.ownership.on_change.append(self._slots_changed)

    def _slots_changed(self, gained: set[int], lost: set[int]) -> None:
        for slot in gained | lost:
            self.clock.forget(slot)
        # a slot's tallies leave with it: the inbox metadata that travels
        # with the slot says which inboxes its next owner must count
        self.inbox.tallies.forget_slots(gained | lost)

    @classmethod
    def open(
        cls,
        data_dir: str,
        shard_id: int,
        settings: ShardSettings | None = None,
        overrides: dict[str, int] | None = None,
        compress_tables: bool = False,
        write_buffer_mb: int = DEFAULT_WRITE_BUFFER_MB,
    ) -> ShardState:
        """Open a shard's store. Settings: defaults, then what was stored by an
        earlier UpdateSettings, then ``overrides`` (flags given explicitly)."""
        store = Store(data_dir, compress_tables=compress_tables, write_buffer_mb=write_buffer_mb)
        settings = settings or ShardSettings()
        raw = store.get(keys.shard_meta("settings"))
        if raw is not None:
            stored = shard_pb2.Settings.FromString(raw)
            for name in RUNTIME_FIELDS:
                if holds_setting(stored, name):  # else the default applies
                    setattr(settings, name, getattr(stored, name))
        for name, value in (overrides or {}).items():
            setattr(settings, name, value)
        state = cls(store=store, ownership=SlotOwnership(store, shard_id), settings=settings)
        state.persist_settings()
        applied = store.get(keys.THRESHOLD_APPLIED)
        state.threshold_applied = None if applied is None else keys.last_u64(applied)
        return state

    @property
    def threshold_unapplied(self) -> bool:
        """Some owned user may not be checked against the current threshold: a
        flag changed it at this start, or a re-check was cut short (a crash
        in UpdateSettings, a failed re-check); the start re-checks them all."""
        return self.threshold_applied != self.settings.celebrity_threshold

    def persist_settings(self) -> None:
        self.store.db.put(
            keys.shard_meta("settings"), to_message(self.settings).SerializeToString(), sync=True
        )

    @property
    def shard_id(self) -> int:
        return self.ownership.shard_id
