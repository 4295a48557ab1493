"""The cluster's consistency check and repair, run by a router for
``CheckConsistency`` and ``Repair``.

Each shard checks a chunk of its slots at a time (``CheckSlots``): its
counters against what they count, and it returns the follow edges whose
other side lives elsewhere and the tweets its inboxes hold copies of. The
router then asks the other sides' shards for the edges (``CheckEdges``) and
the tweets' shards which tweets still exist (``GetTweets``, ids only); with
repair, the shards add missing edge sides and drop copies of tweets that are
gone (``DropInboxCopies``). Chunks keep every message and every pause of a
shard's loop bounded, however big the shard is.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from murmur.errors import ServiceError
from murmur.slots import SLOT_COUNT, describe_slots
from murmur.v1 import admin_pb2, shard_pb2
from server.shard_pool import ShardPool

CHECK_CHUNK_SLOTS = 64  # slots per CheckSlots: ~1/64 of a 2-shard cluster's keys per pause
EXISTS_BATCH = 5_000  # tweet ids per GetTweets when asking which still exist
MAX_FINDINGS = 100
CHECK_TIMEOUT_S = 600.0


class ConsistencyCheck:
    """One run of the check over ``slots`` (all slots if empty)."""

    def __init__(self, pool: ShardPool, slots: list[int], repair: bool) -> None:
        self.pool = pool
        self.table = pool.table
        self.slots = slots or list(range(SLOT_COUNT))
        self.repair = repair
        self.report = admin_pb2.ConsistencyReport()
        self._stale_outbox: dict[int, int] = {}

    async def run(self) -> admin_pb2.ConsistencyReport:
        by_shard: dict[int, list[int]] = defaultdict(list)
        for slot in self.slots:
            by_shard[self.table.owners[slot]].append(slot)
        await asyncio.gather(*(self._check_shard(s, held) for s, held in by_shard.items()))
        self.report.stale_outbox_records = sum(self._stale_outbox.values())
        return self.report

    def _find(self, line: str) -> None:
        if len(self.report.findings) < MAX_FINDINGS:
            self.report.findings.append(line)

    async def _check_shard(self, shard_id: int, slots: list[int]) -> None:
        for start in range(0, len(slots), CHECK_CHUNK_SLOTS):
            chunk = slots[start : start + CHECK_CHUNK_SLOTS]
            reply = await self.pool.direct(
                shard_id,
                "CheckSlots",
                shard_pb2.CheckSlotsRequest(slots=chunk, repair=self.repair),
                CHECK_TIMEOUT_S,
            )
            self.report.wrong_counters += reply.wrong_counters
            self.report.repaired += reply.repaired
            self._stale_outbox[shard_id] = reply.stale_outbox_records  # the whole outbox's
            for line in reply.findings:
                self._find(line)
            await self._check_edges(reply)
            await self._check_copies(shard_id, chunk, reply)

    async def _check_edges(self, reply: shard_pb2.CheckSlotsResponse) -> None:
        """Edges held here whose other side lives on another shard."""
        following_by_shard: dict[int, list] = defaultdict(list)
        followers_by_shard: dict[int, list] = defaultdict(list)
        for edge in reply.following_edges:
            following_by_shard[self.table.shard_for_user(edge.followee_id)].append(edge)
        for edge in reply.follower_edges:
            followers_by_shard[self.table.shard_for_user(edge.follower_id)].append(edge)
        for groups, side in (
            (following_by_shard, shard_pb2.FOLLOWERS),
            (followers_by_shard, shard_pb2.FOLLOWING),
        ):
            where = "followers" if side == shard_pb2.FOLLOWERS else "following"
            for shard_id, edges in groups.items():
                found = await self.pool.direct(
                    shard_id,
                    "CheckEdges",
                    shard_pb2.CheckEdgesRequest(edges=edges, side=side, repair=self.repair),
                    CHECK_TIMEOUT_S,
                )
                self.report.one_sided_edges += len(found.missing)
                self.report.repaired += found.repaired
                for edge in found.missing:
                    self._find(f"edge {edge.follower_id} -> {edge.followee_id} has no {where} side")

    async def _check_copies(
        self, holder: int, chunk: list[int], reply: shard_pb2.CheckSlotsResponse
    ) -> None:
        """Inbox copies of tweets their author's shard no longer holds (a
        shard restored from an older backup lost them): counted, named, and
        with repair removed. A delete still on its way to the inboxes (or
        parked for a shard that is down) shows here until it arrives;
        removing its copies early does no harm."""
        copies = dict(zip(reply.inbox_tweet_ids, reply.inbox_tweet_copies, strict=True))
        gone = sorted(await self._gone(list(copies)))
        if not gone:
            return
        self.report.ghost_inbox_copies += sum(copies[t] for t in gone)
        # the chunk's slots tell one chunk's line from the next (a tweet that
        # reached several chunks' inboxes read as the same line repeated) and
        # are what `murmur-admin check --slots ... --repair` takes
        where = f"on shard {holder} (inboxes in slots {describe_slots(chunk)})"
        for tweet_id in gone:
            held = copies[tweet_id]
            self._find(
                f"tweet {tweet_id} no longer exists, but {held} inbox "
                f"{'copy remains' if held == 1 else 'copies remain'} {where}"
            )
        if self.repair:
            dropped = await self.pool.direct(
                holder,
                "DropInboxCopies",
                shard_pb2.DropInboxCopiesRequest(slots=chunk, tweet_ids=gone),
                CHECK_TIMEOUT_S,
            )
            self.report.repaired += dropped.removed

    async def _gone(self, tweet_ids: list[int]) -> set[int]:
        """The tweets among ``tweet_ids`` their shards say they do not hold.
        A shard that cannot answer (down, its slots moving, the router's map
        behind) is named in a finding, and its tweets are taken as present."""
        by_owner: dict[int, list[int]] = defaultdict(list)
        for tweet_id in tweet_ids:
            by_owner[self.table.shard_for_tweet(tweet_id)].append(tweet_id)
        gone: set[int] = set()
        for owner, ids in sorted(by_owner.items()):
            for start in range(0, len(ids), EXISTS_BATCH):
                batch = ids[start : start + EXISTS_BATCH]
                request = shard_pb2.GetTweetsRequest(tweet_ids=batch, ids_only=True)
                try:
                    found = await self.pool.direct(owner, "GetTweets", request, CHECK_TIMEOUT_S)
                except ServiceError as exc:
                    self._find(
                        f"could not ask shard {owner} whether {len(ids) - start} tweets held in "
                        f"inboxes still exist ({exc.message}); check again later"
                    )
                    break
                gone.update(set(batch) - {tweet.tweet_id for tweet in found.tweets})
        return gone
