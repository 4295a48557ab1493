"""Everything one shard process holds, bundled so each part can reach the others."""

from __future__ import annotations

from dataclasses import dataclass, field

from murmur.ids import IdClock
from shard.graph import FollowGraph
from shard.inbox import InboxStore
from shard.outbox import Outbox
from shard.ownership import SlotOwnership
from shard.settings import ShardSettings
from shard.store import Store
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

    @classmethod
    def open(cls, data_dir: str, shard_id: int, settings: ShardSettings) -> ShardState:
        store = Store(data_dir)
        return cls(store=store, ownership=SlotOwnership(store, shard_id), settings=settings)

    @property
    def shard_id(self) -> int:
        return self.ownership.shard_id
