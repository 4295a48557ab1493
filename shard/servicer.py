"""The ``murmur.v1.Shard`` service: one shard's data plane.

Handlers never await between reading and committing a transaction, so on the
single asyncio loop each write is atomic and counters stay exact without
locks. Each acknowledged write is one LevelDB batch, on disk (fsynced, with
concurrent writes sharing the fsync: see ``group_commit``) before the reply,
unless the shard was started with --unsafe-no-fsync.
"""

from __future__ import annotations

import logging
from contextlib import aclosing

import grpc

from murmur import raw_tweets
from murmur.errors import ServiceError, invalid, not_found
from murmur.ids import now_ms, slot_of_tweet
from murmur.rpc_errors import refuse_unparseable, rpc, streamed
from murmur.slots import slot_for_handle, slot_for_user
from murmur.v1 import murmur_pb2, shard_pb2, shard_pb2_grpc
from murmur.validation import MAX_FOLLOWING, MAX_PER_AUTHOR_TWEETS
from shard.backup import backup
from shard.batch_execute import BatchStreams, run_calls
from shard.celebrity import consistent_slots, reevaluate_all
from shard.consistency import check_edges, check_slots, drop_inbox_copies
from shard.delivery import DeliveryApplier, trim_threshold
from shard.fanout import FanoutWorker
from shard.group_commit import GroupCommit
from shard.maintenance import compact, local_stats
from shard.map_lease import MapLeases
from shard.metrics import INBOX_SIZE
from shard.migration import SlotMigrator, import_entries, take_map
from shard.outbox import add_follower_record, remove_follower_record
from shard.peers import PeerShards
from shard.rate_limits import UserRateLimiter
from shard.settings import apply_update, check_update, to_message
from shard.state import ShardState
from shard.storage_fence import WRITE_FAILURES
from shard.users import timestamp_ms

log = logging.getLogger("murmur.shard.servicer")

MAX_PULL_AUTHORS = 100_000


class ShardServicer(shard_pb2_grpc.ShardServicer):
    service_name = "Shard"

    def __init__(
        self,
        state: ShardState,
        applier: DeliveryApplier,
        worker: FanoutWorker | None = None,
        peers: PeerShards | None = None,
        fsync: bool = True,
    ) -> None:
        self.state = state
        self.applier = applier
        self.commits = GroupCommit(state.store, fsync=fsync)
        self.map_leases = MapLeases(state.store, state.ownership)
        self.batch_streams = BatchStreams(self)
        self.worker = worker
        self.peers = peers
        self.post_limits = UserRateLimiter("post_rate_limit")
        self.follow_limits = UserRateLimiter("follow_rate_limit")

    @property
    def component(self) -> str:
        return f"shard {self.state.shard_id}"

    def shard_of(self, request) -> int:
        """Every call a shard logs is its own."""
        return self.state.shard_id

    def _own_user(self, user_id: int, field: str = "user_id") -> None:
        if user_id <= 0:
            raise invalid(f"{field} is required (a positive 64-bit id)")
        self.state.ownership.check(slot_for_user(user_id))

    # cluster ----------------------------------------------------------------
    @rpc
    async def GetShardInfo(self, request, context):
        return self.state.ownership.info()

    @rpc
    async def AssignSlots(self, request, context):
        take_map(self.state, request.slot_map, consistent_slots(self.state, request))
        return self.state.ownership.info()

    @rpc
    async def Ping(self, request, context):
        return murmur_pb2.PingResponse(shard_id=self.state.shard_id)

    # users ------------------------------------------------------------------
    @rpc
    async def CreateUser(self, request, context):
        self.state.ownership.check(slot_for_handle(request.handle))
        txn = self.state.store.txn()
        record = self.state.users.create(
            txn,
            request.handle,
            request.display_name,
            request.bio,
            self.state.settings.celebrity_threshold,
            request.request_id,
        )
        txn.commit(sync=False)
        await self.commits.durable()
        return record.user

    @rpc
    async def GetUsers(self, request, context):
        txn = self.state.store.txn()
        found = []
        for user_id in request.user_ids:
            self._own_user(user_id)
            record = self.state.users.get(txn, user_id)
            if record is not None:
                found.append(record)
        return shard_pb2.GetUsersResponse(users=found)

    @rpc
    async def GetUserByHandle(self, request, context):
        self.state.ownership.check(slot_for_handle(request.handle))
        record = self.state.users.by_handle(self.state.store.txn(), request.handle)
        if record is None:
            raise not_found(f"no user has the handle {request.handle!r}")
        return record.user

    @rpc
    async def UpdateUser(self, request, context):
        self._own_user(request.user_id)
        txn = self.state.store.txn()
        record = self.state.users.require(txn, request.user_id)
        if self.state.users.update_profile(txn, record, request):
            txn.commit(sync=False)
        await self.commits.durable()  # an equal update may repeat one still syncing
        return record.user

    # follows ----------------------------------------------------------------
    @rpc
    async def Follow(self, request, context):
        follower, followee = request.follower_id, request.followee_id
        self._own_user(follower, "follower_id")
        if followee <= 0:
            raise invalid("followee_id is required (a positive 64-bit id)")
        if follower == followee:
            raise invalid(
                "follower_id and followee_id are the same user; you cannot follow yourself"
            )
        state = self.state
        txn = state.store.txn()
        record = state.users.require(txn, follower, "follower")
        if state.graph.following_edge(txn, follower, followee) is not None:
            await self.commits.durable()  # the edge we saw may still be syncing
            return murmur_pb2.FollowResponse()
        if record.user.following_count >= MAX_FOLLOWING:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"user {follower} already follows {record.user.following_count:,} accounts, "
                f"the most one may follow ({MAX_FOLLOWING:,}); unfollow some first",
            )
        admitted = self.follow_limits.admit(follower, state.settings.follow_rate_limit)
        edge = shard_pb2.FollowEdge(
            followed_ms=now_ms(),
            celebrity=request.followee_celebrity,
            celebrity_version=request.followee_celebrity_version,
        )
        state.graph.put_following(txn, follower, followee, edge)
        record.user.following_count += 1
        state.users.put(txn, record)
        state.outbox.append(txn, add_follower_record(followee, follower, edge.followed_ms))
        txn.commit(sync=False)
        self.follow_limits.spend(admitted)
        await self.commits.durable()
        return murmur_pb2.FollowResponse()

    @rpc
    async def Unfollow(self, request, context):
        follower, followee = request.follower_id, request.followee_id
        self._own_user(follower, "follower_id")
        if followee <= 0:
            raise invalid("followee_id is required (a positive 64-bit id)")
        state = self.state
        txn = state.store.txn()
        record = state.users.require(txn, follower, "follower")
        if state.graph.following_edge(txn, follower, followee) is None:
            await self.commits.durable()
            return murmur_pb2.UnfollowResponse()
        admitted = self.follow_limits.admit(follower, state.settings.follow_rate_limit)
        state.graph.delete_following(txn, follower, followee)
        state.inbox.remove_author(txn, follower, followee)
        record.user.following_count = max(0, record.user.following_count - 1)
        state.users.put(txn, record)
        state.outbox.append(txn, remove_follower_record(followee, follower))
        txn.commit(sync=False)
        self.follow_limits.spend(admitted)
        await self.commits.durable()
        return murmur_pb2.UnfollowResponse()

    @rpc
    async def ListEdges(self, request, context):
        self._own_user(request.user_id)
        self.state.users.require(self.state.store.txn(), request.user_id)
        limit = max(1, min(request.limit or 20, 10_000))
        if request.direction == shard_pb2.FOLLOWERS:
            ids, more = self.state.graph.page_followers(request.user_id, request.after_id, limit)
        elif request.direction == shard_pb2.FOLLOWING:
            ids, more = self.state.graph.page_following(request.user_id, request.after_id, limit)
        else:
            raise invalid("direction must be FOLLOWERS or FOLLOWING")
        return shard_pb2.ListEdgesResponse(user_ids=ids, more=more)

    # tweets -----------------------------------------------------------------
    @rpc
    async def PostTweet(self, request, context):
        author = request.user_id
        self._own_user(author)
        state = self.state
        txn = state.store.txn()
        record = state.users.require(txn, author)
        if request.request_id:
            existing = state.tweets.by_request(txn, author, request.request_id, request.text)
            if existing is not None:
                tweet = self._retried_post(txn, existing, request.request_id)
                await self.commits.durable()  # the first attempt may still be syncing
                return tweet
        admitted = self.post_limits.admit(author, state.settings.post_rate_limit)
        tweet = state.tweets.create(txn, author, request.text, request.request_id)
        record.user.tweet_count += 1
        state.users.put(txn, record)
        own_inbox_size = state.inbox.put(txn, author, tweet)
        if not record.user.celebrity:
            self._queue_fanout(txn, shard_pb2.FANOUT_PUT, tweet)
        txn.commit(sync=False)
        self.post_limits.spend(admitted)
        if own_inbox_size > trim_threshold(state.settings.inbox_cap):
            self._trim_own_inbox(author)
        await self.commits.durable()
        return tweet

    def _trim_own_inbox(self, author: int) -> None:
        """Best effort: the post has landed, so a failing disk here must not
        tell the caller it did not (``durable`` says what it can); a later
        post or delivery trims again."""
        try:
            self.state.inbox.trim(author, self.state.settings.inbox_cap)
        except WRITE_FAILURES as exc:
            log.warning("trimming the inbox of user %d after a post failed: %s", author, exc)

    def _retried_post(self, txn, tweet_id: int, request_id: str) -> murmur_pb2.Tweet:
        tweet = self.state.tweets.get(txn, tweet_id)
        if tweet is None:
            raise not_found(
                f"tweet {tweet_id}, first posted with request_id {request_id!r}, was deleted"
            )
        return tweet

    def _queue_fanout(self, txn, kind: int, tweet: murmur_pb2.Tweet) -> None:
        self.state.outbox.append(
            txn,
            shard_pb2.OutboxRecord(tweet_fanout=shard_pb2.TweetFanout(kind=kind, tweet=tweet)),
        )

    @rpc
    async def GetTweets(self, request, context):
        txn = self.state.store.txn()
        found = []
        for tweet_id in request.tweet_ids:
            self.state.ownership.check(slot_of_tweet(tweet_id))
            tweet = self.state.tweets.get(txn, tweet_id)
            if tweet is not None:
                found.append(murmur_pb2.Tweet(tweet_id=tweet_id) if request.ids_only else tweet)
        return shard_pb2.GetTweetsResponse(tweets=found)

    @rpc
    async def EditTweet(self, request, context):
        self.state.ownership.check(slot_of_tweet(request.tweet_id))
        state = self.state
        txn = state.store.txn()
        tweet = state.tweets.require_own(txn, request.tweet_id, request.user_id)
        author = state.users.require(txn, tweet.user_id)
        admitted = self.post_limits.admit(tweet.user_id, state.settings.post_rate_limit)
        tweet.text = request.text
        tweet.edited_at.CopyFrom(timestamp_ms(now_ms()))
        state.tweets.put(txn, tweet)
        state.inbox.replace(txn, tweet.user_id, tweet)
        if not author.user.celebrity:
            self._queue_fanout(txn, shard_pb2.FANOUT_EDIT, tweet)
        txn.commit(sync=False)
        self.post_limits.spend(admitted)  # an edit fans out again, as a post does
        await self.commits.durable()
        return tweet

    @rpc
    async def DeleteTweet(self, request, context):
        self.state.ownership.check(slot_of_tweet(request.tweet_id))
        state = self.state
        txn = state.store.txn()
        tweet = state.tweets.require_own(txn, request.tweet_id, request.user_id)
        author = state.users.require(txn, tweet.user_id)
        state.tweets.delete(txn, tweet)
        author.user.tweet_count = max(0, author.user.tweet_count - 1)
        state.users.put(txn, author)
        state.inbox.remove(txn, tweet.user_id, tweet.tweet_id)
        if not author.user.celebrity:
            self._queue_fanout(txn, shard_pb2.FANOUT_DELETE, tweet)
        txn.commit(sync=False)
        await self.commits.durable()
        return murmur_pb2.DeleteTweetResponse()

    # timelines --------------------------------------------------------------
    @rpc
    async def PullTimelines(self, request, context):
        if len(request.author_ids) > MAX_PULL_AUTHORS:
            raise invalid(
                f"author_ids has {len(request.author_ids)} ids; the limit is {MAX_PULL_AUTHORS}"
            )
        txn = self.state.store.txn()
        for author in request.author_ids:
            self._own_user(author, "author_ids")
            if request.require_authors:
                self.state.users.require(txn, author)
        limit = max(1, min(request.limit or 20, 1000))
        tweets = self.state.tweets
        if not request.per_author:
            pairs = tweets.merged(request.author_ids, request.before_id, limit)
        elif len(request.author_ids) * limit > MAX_PER_AUTHOR_TWEETS:
            raise invalid(
                f"per_author pull of {len(request.author_ids)} authors x limit {limit} "
                f"exceeds {MAX_PER_AUTHOR_TWEETS} tweets"
            )
        else:
            pairs = [
                pair
                for author in request.author_ids
                for pair in tweets.recent_raw(author, request.before_id, limit)
            ]
        response = shard_pb2.PullTimelinesResponse()
        response.MergeFromString(raw_tweets.repeated_field(raw for _, raw in pairs))
        return response

    @rpc
    async def ReadInbox(self, request, context):
        reader = request.user_id
        self._own_user(reader)
        state = self.state
        txn = state.store.txn()
        state.users.require(txn, reader)
        celebrities = state.graph.followed_celebrities(reader)
        meta = state.inbox.meta(txn, reader)
        INBOX_SIZE.observe(meta.size)
        limit = max(1, min(request.limit or 20, 1000))
        entries, short = state.inbox.page(
            reader, request.before_id, limit, set(celebrities), meta.exact_from
        )
        here = (
            []
            if request.skip_local_celebrities
            else [c for c in celebrities if state.ownership.serves(slot_for_user(c))]
        )
        if here:  # pulled on the spot: the router need not call this shard again
            pulled = state.tweets.merged(here, request.before_id, limit)
            entries = raw_tweets.newest([entries, pulled], limit)
        merged = set(here)
        response = shard_pb2.ReadInboxResponse(
            celebrity_ids=[c for c in celebrities if c not in merged],
            exact_from=meta.exact_from,
            merged_celebrity_ids=here,
            page_ids=[tweet_id for tweet_id, _ in entries],
        )
        if short and meta.exact_from > 0:
            celebrity_set = set(celebrities)
            ordinary = [u for u in state.graph.followees(reader) if u not in celebrity_set]
            response.needs_pull_below = True
            response.pull_below_ids.extend([reader, *ordinary])
        if request.raw_page and (response.celebrity_ids or response.needs_pull_below):
            response.page_raw.extend([raw for _, raw in entries])  # the router merges it
        else:
            response.page.MergeFromString(raw_tweets.repeated_field(raw for _, raw in entries))
        return response

    # fan-out ----------------------------------------------------------------
    @rpc
    async def Deliver(self, request, context):
        try:
            written = self.applier.apply(list(request.ops))
            await self.commits.durable()
        except ServiceError:
            raise
        except ValueError as exc:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        return shard_pb2.DeliverResponse(inbox_entries_written=written)

    @rpc
    async def Execute(self, request, context):
        results = await run_calls(self, request.calls, context.time_remaining())
        return shard_pb2.ExecuteResponse(results=results)

    async def ExecuteStream(self, requests, context):
        await self.batch_streams.serve(requests, context)

    # settings ---------------------------------------------------------------
    @rpc
    async def GetSettings(self, request, context):
        return to_message(self.state.settings)

    @rpc
    async def UpdateSettings(self, request, context):
        try:
            check_update(request)
        except ValueError as exc:
            raise invalid(str(exc)) from exc
        changed = apply_update(self.state.settings, request)
        self.state.persist_settings()
        if "celebrity_threshold" in changed:
            reevaluate_all(self.state)
        return to_message(self.state.settings)

    # operators ----------------------------------------------------------------
    @rpc
    async def GetStats(self, request, context):
        return await local_stats(self.state, self.worker, self.commits)

    @rpc
    async def Compact(self, request, context):
        return await compact(self.state)

    async def Backup(self, request, context):
        await refuse_unparseable(request, context)
        # closed here, not whenever it is collected: a cancelled backup
        # removes its unfinished copy before the call ends
        async with aclosing(backup(self.state, request.path)) as statuses:
            async for status in streamed(
                context, statuses, component=self.component, method="Backup"
            ):
                yield status

    async def MigrateSlots(self, request, context):
        await refuse_unparseable(request, context)
        if self.peers is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this shard cannot reach peers")
        migration = SlotMigrator(self.state, self.peers).migrate(request)
        async for status in streamed(
            context, migration, component=self.component, method="MigrateSlots"
        ):
            yield status

    @rpc
    async def ImportEntries(self, request, context):
        stored = import_entries(self.state, request)
        return shard_pb2.ImportEntriesResponse(stored=stored)

    @rpc
    async def CheckSlots(self, request, context):
        return check_slots(self.state, request)

    @rpc
    async def CheckEdges(self, request, context):
        response = check_edges(self.state, request)
        await self.commits.durable()
        return response

    @rpc
    async def AcquireMapLease(self, request, context):
        return self.map_leases.acquire(request.holder, request.ttl_ms)

    @rpc
    async def ReleaseMapLease(self, request, context):
        return self.map_leases.release(request.holder)

    @rpc
    async def DropInboxCopies(self, request, context):
        response = drop_inbox_copies(self.state, request)
        await self.commits.durable()
        return response
