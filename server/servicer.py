"""The ``murmur.v1.Murmur`` service on the router: validate, route, merge.

The router is stateless apart from its cached slot map: every request is
checked against the documented rules here, then sent to the shard that owns
the key, carrying the caller's remaining deadline. What goes to a shard is
rebuilt from the checked fields, never the caller's message itself: fields
a client added that this router does not know would travel along (up to the
1 MB limit each) and fill the shard's batched calls.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from murmur import page_tokens
from murmur.errors import ServiceError, invalid, not_found
from murmur.ids import MAX_ID, slot_of_tweet
from murmur.page_tokens import BadPageToken, TokenKind
from murmur.rpc_errors import rpc
from murmur.slots import slot_for_handle, slot_for_user
from murmur.v1 import murmur_pb2, murmur_pb2_grpc, shard_pb2
from murmur.validation import (
    MAX_BIO,
    MAX_DISPLAY_NAME,
    PROFILE_LIMITS,
    check_handle,
    check_id,
    check_request_id,
    check_short_text,
    check_tweet_text,
    page_size,
)
from server.celebrity_cache import CelebrityTimelines
from server.home_timeline import merge_home
from server.shard_pool import ShardPool, WrongSlot
from server.slot_map import RoutingTable

log = logging.getLogger("murmur.router")


def decode_token(kind: TokenKind, owner: int, token: str) -> int:
    try:
        return page_tokens.decode(kind, owner, token)
    except BadPageToken as exc:
        raise invalid(str(exc)) from exc


def with_token(
    page: murmur_pb2.TimelineResponse, kind: TokenKind, owner: int, limit: int
) -> murmur_pb2.TimelineResponse:
    """Cut a page read ``limit + 1`` deep to ``limit`` and fill in the token
    that continues after it. Only a page that had the extra tweet gets one:
    the proto promises an empty token on the last page, and a full last
    page with a token cost every caller a read that came back empty."""
    tweets = page.tweets
    if len(tweets) > limit:
        del tweets[limit:]
        page.next_page_token = page_tokens.encode(kind, owner, tweets[-1].tweet_id)
    return page


def still_moving(exc: WrongSlot, slot: int | None = None) -> ServiceError:
    """A wrong-slot answer that outlived a map refresh and a retry: the slot
    is between shards (mid-move, or the newest map has not reached every
    shard yet). UNAVAILABLE, not the shard's FAILED_PRECONDITION, because it
    passes by itself and clients retry UNAVAILABLE (the shard refused the
    call, so a retry cannot apply a write twice)."""
    what = "a slot" if slot is None else f"slot {slot}"
    return ServiceError(
        grpc.StatusCode.UNAVAILABLE, f"{what} is moving between shards ({exc.message}); retry"
    )


def check_tweet_id(tweet_id: int) -> int:
    if tweet_id <= 0 or tweet_id > MAX_ID:
        raise invalid(f"tweet_id {tweet_id} is not a valid tweet id (1..{MAX_ID})")
    return tweet_id


class MurmurServicer(murmur_pb2_grpc.MurmurServicer):
    component = "router"
    service_name = "Murmur"

    def __init__(
        self,
        table: RoutingTable,
        pool: ShardPool,
        celebrity_copies: CelebrityTimelines | None = None,
    ) -> None:
        self.table = table
        self.pool = pool
        self.celebrity_copies = celebrity_copies

    def shard_of(self, request: Any) -> int | None:
        """The shard a request is routed to, for call logs."""
        if getattr(request, "tweet_id", 0):
            return self.table.shard_for_tweet(request.tweet_id)
        for name in ("user_id", "follower_id"):
            if getattr(request, name, 0):
                return self.table.shard_for_user(getattr(request, name))
        handle = getattr(request, "handle", "")  # CreateUser, GetUser by handle
        return self.table.shard_for_handle(handle) if isinstance(handle, str) and handle else None

    # routing ------------------------------------------------------------------
    @staticmethod
    def _timeout(context: grpc.aio.ServicerContext) -> float | None:
        return context.time_remaining()

    async def _refresh(self, context: Any) -> None:
        """A shard said it no longer owns a slot: re-learn the map from the
        shards, within the caller's time."""
        await self.pool.refresh_map(self._timeout(context))

    async def _routed(self, slot: int, method: str, request: Any, context: Any) -> Any:
        """Call the owner of ``slot``; on a stale map, refresh once and retry
        (the owner is looked up again: the refresh may have moved it); a slot
        still refused after that is mid-move, see ``still_moving``."""
        try:
            return await self._call_owner(slot, method, request, context)
        except WrongSlot:
            await self._refresh(context)
        try:
            return await self._call_owner(slot, method, request, context)
        except WrongSlot as exc:
            raise still_moving(exc, slot) from None

    async def _call_owner(self, slot: int, method: str, request: Any, context: Any) -> Any:
        shard_id = self.table.shard_for_slot(slot)
        return await self.pool.call(shard_id, method, request, self._timeout(context))

    async def _user_call(self, user_id: int, method: str, request: Any, context: Any) -> Any:
        return await self._routed(slot_for_user(user_id), method, request, context)

    async def _tweet_call(self, tweet_id: int, method: str, request: Any, context: Any) -> Any:
        return await self._routed(slot_of_tweet(tweet_id), method, request, context)

    async def _user_records(
        self, user_ids: list[int], context: Any
    ) -> dict[int, shard_pb2.UserRecord]:
        """Multi-get across shards: one GetUsers call per shard, in parallel;
        a stale map is refreshed once."""
        try:
            return await self._user_records_once(user_ids, context)
        except WrongSlot:
            await self._refresh(context)
        try:
            return await self._user_records_once(user_ids, context)
        except WrongSlot as exc:
            raise still_moving(exc) from None

    async def _user_records_once(
        self, user_ids: list[int], context: Any
    ) -> dict[int, shard_pb2.UserRecord]:
        groups = self.table.group_users(user_ids)
        calls = [
            self.pool.call(
                shard_id,
                "GetUsers",
                shard_pb2.GetUsersRequest(user_ids=ids),
                self._timeout(context),
            )
            for shard_id, ids in groups.items()
        ]
        found: dict[int, shard_pb2.UserRecord] = {}
        for response in await asyncio.gather(*calls):
            for record in response.users:
                found[record.user.user_id] = record
        return found

    async def _require_user(self, user_id: int, role: str, context: Any) -> shard_pb2.UserRecord:
        response = await self._user_call(
            user_id, "GetUsers", shard_pb2.GetUsersRequest(user_ids=[user_id]), context
        )
        if not response.users:
            raise not_found(f"{role} {user_id} does not exist")
        return response.users[0]

    # users --------------------------------------------------------------------
    @rpc
    async def CreateUser(self, request, context):
        handle = check_handle(request.handle)
        forwarded = murmur_pb2.CreateUserRequest(
            handle=handle,
            display_name=check_short_text("display_name", request.display_name, MAX_DISPLAY_NAME),
            bio=check_short_text("bio", request.bio, MAX_BIO),
            request_id=check_request_id(request.request_id),
        )
        return await self._routed(slot_for_handle(handle), "CreateUser", forwarded, context)

    @rpc
    async def GetUser(self, request, context):
        which = request.WhichOneof("key")
        if which == "handle":
            handle = check_handle(request.handle)
            return await self._routed(
                slot_for_handle(handle),
                "GetUserByHandle",
                shard_pb2.GetUserByHandleRequest(handle=handle),
                context,
            )
        if which == "user_id":
            user_id = check_id("user_id", request.user_id)
            return (await self._require_user(user_id, "user", context)).user
        raise invalid("one of user_id or handle is required")

    @rpc
    async def UpdateUser(self, request, context):
        user_id = check_id("user_id", request.user_id)
        forwarded = murmur_pb2.UpdateUserRequest(user_id=user_id)
        for name, limit in PROFILE_LIMITS.items():
            if request.HasField(name):
                setattr(forwarded, name, check_short_text(name, getattr(request, name), limit))
        if not any(forwarded.HasField(name) for name in PROFILE_LIMITS):
            raise invalid("nothing to update: set display_name or bio (or both)")
        return await self._user_call(user_id, "UpdateUser", forwarded, context)

    # follows ------------------------------------------------------------------
    @rpc
    async def Follow(self, request, context):
        follower = check_id("follower_id", request.follower_id)
        followee = check_id("followee_id", request.followee_id)
        if follower == followee:
            raise invalid(
                "follower_id and followee_id are the same user; you cannot follow yourself"
            )
        target = await self._require_user(followee, "followee", context)
        forwarded = shard_pb2.ShardFollowRequest(
            follower_id=follower,
            followee_id=followee,
            followee_celebrity=target.user.celebrity,
            followee_celebrity_version=target.celebrity_version,
        )
        return await self._user_call(follower, "Follow", forwarded, context)

    @rpc
    async def Unfollow(self, request, context):
        follower = check_id("follower_id", request.follower_id)
        forwarded = murmur_pb2.UnfollowRequest(
            follower_id=follower, followee_id=check_id("followee_id", request.followee_id)
        )
        return await self._user_call(follower, "Unfollow", forwarded, context)

    async def _list_users(self, request, context, direction: int, kind: TokenKind):
        user_id = check_id("user_id", request.user_id)
        limit = page_size(request.page_size)
        after = decode_token(kind, user_id, request.page_token)
        edges = await self._user_call(
            user_id,
            "ListEdges",
            shard_pb2.ListEdgesRequest(
                user_id=user_id, direction=direction, after_id=after, limit=limit
            ),
            context,
        )
        records = await self._user_records(list(edges.user_ids), context)
        users = [records[uid].user for uid in edges.user_ids if uid in records]
        token = page_tokens.encode(kind, user_id, edges.user_ids[-1]) if edges.more else ""
        return murmur_pb2.ListUsersResponse(users=users, next_page_token=token)

    @rpc
    async def ListFollowers(self, request, context):
        return await self._list_users(request, context, shard_pb2.FOLLOWERS, TokenKind.FOLLOWERS)

    @rpc
    async def ListFollowing(self, request, context):
        return await self._list_users(request, context, shard_pb2.FOLLOWING, TokenKind.FOLLOWING)

    # tweets -------------------------------------------------------------------
    @rpc
    async def PostTweet(self, request, context):
        author = check_id("user_id", request.user_id)
        forwarded = murmur_pb2.PostTweetRequest(
            user_id=author,
            text=check_tweet_text(request.text),
            request_id=check_request_id(request.request_id),
        )
        try:
            return await self._user_call(author, "PostTweet", forwarded, context)
        finally:
            self._forget_copy(author)

    @rpc
    async def GetTweet(self, request, context):
        tweet_id = check_tweet_id(request.tweet_id)
        response = await self._tweet_call(
            tweet_id, "GetTweets", shard_pb2.GetTweetsRequest(tweet_ids=[tweet_id]), context
        )
        if not response.tweets:
            raise not_found(f"tweet {tweet_id} does not exist")
        return response.tweets[0]

    @rpc
    async def EditTweet(self, request, context):
        tweet_id = check_tweet_id(request.tweet_id)
        forwarded = murmur_pb2.EditTweetRequest(
            tweet_id=tweet_id,
            user_id=check_id("user_id", request.user_id),
            text=check_tweet_text(request.text),
        )
        try:
            return await self._tweet_call(tweet_id, "EditTweet", forwarded, context)
        finally:
            self._forget_copy(forwarded.user_id)

    @rpc
    async def DeleteTweet(self, request, context):
        tweet_id = check_tweet_id(request.tweet_id)
        author = check_id("user_id", request.user_id)
        forwarded = murmur_pb2.DeleteTweetRequest(tweet_id=tweet_id, user_id=author)
        try:
            return await self._tweet_call(tweet_id, "DeleteTweet", forwarded, context)
        finally:
            self._forget_copy(author)

    # timelines ----------------------------------------------------------------
    @rpc
    async def GetUserTimeline(self, request, context):
        user_id = check_id("user_id", request.user_id)
        limit = page_size(request.page_size)
        before = decode_token(TokenKind.USER_TIMELINE, user_id, request.page_token)
        pulled = await self._user_call(
            user_id,
            "PullTimelines",
            shard_pb2.PullTimelinesRequest(
                author_ids=[user_id], before_id=before, limit=limit + 1, require_authors=True
            ),
            context,
        )
        # PullTimelinesResponse is wire-compatible with TimelineResponse (see
        # shard.proto): re-reading its bytes beats copying tweet by tweet.
        page = murmur_pb2.TimelineResponse.FromString(pulled.SerializeToString())
        return with_token(page, TokenKind.USER_TIMELINE, user_id, limit)

    @rpc
    async def GetHomeTimeline(self, request, context):
        reader = check_id("user_id", request.user_id)
        limit = page_size(request.page_size)
        before = decode_token(TokenKind.HOME_TIMELINE, reader, request.page_token)
        copies = self.celebrity_copies
        deep = limit + 1  # the extra tweet says whether a next page exists
        request = shard_pb2.ReadInboxRequest(
            user_id=reader,
            before_id=before,
            limit=deep,
            skip_local_celebrities=copies is not None and copies.serves(before, deep),
            raw_page=True,
        )
        inbox = await self._user_call(reader, "ReadInbox", request, context)
        try:
            page = await merge_home(self.pool, inbox, before, deep, self._timeout(context), copies)
        except WrongSlot:  # a pulled celebrity's slot moved: re-learn the map, once
            await self._refresh(context)
            try:
                page = await merge_home(
                    self.pool, inbox, before, deep, self._timeout(context), copies
                )
            except WrongSlot as exc:
                raise still_moving(exc) from None
        return with_token(page, TokenKind.HOME_TIMELINE, reader, limit)

    def _forget_copy(self, author: int) -> None:
        """Also after a failed or unknown outcome: the write may have landed."""
        if self.celebrity_copies is not None:
            self.celebrity_copies.forget(author)

    @rpc
    async def Ping(self, request, context):
        user_id = request.user_id
        forwarded = murmur_pb2.PingRequest(user_id=user_id)
        if user_id:
            return await self._user_call(user_id, "Ping", forwarded, context)
        return await self.pool.call(
            self.table.shard_for_slot(0), "Ping", forwarded, self._timeout(context)
        )


__all__ = ["MurmurServicer", "ServiceError"]
