"""A small synchronous Python client for the public ``murmur.v1.Murmur`` API.

Why it exists: the generated stub makes callers build request messages, pass
a deadline on every call and pick apart ``grpc.RpcError``. ``MurmurClient``
gives one method per RPC with keyword arguments, applies a default deadline,
turns failures into the typed exceptions of ``client.errors``, and offers
generators that follow ``next_page_token`` for the listing RPCs.

Retries. When ``retries`` is true the channel carries a gRPC service config
that retries UNAVAILABLE (a router or shard that did not answer) with
exponential backoff: at most 4 attempts, 0.05 s initial backoff doubling up to
1 s, all inside the call's single deadline. gRPC does this inside the channel,
so it also covers calls that a server rejected before doing any work, and it
never retries once a response has started. Only RPCs that are safe to repeat
are listed:

* reads (GetUser, ListFollowers, ListFollowing, GetTweet, GetUserTimeline,
  GetHomeTimeline, Ping) change nothing;
* Follow and Unfollow are idempotent by contract;
* EditTweet and UpdateUser set fields to given values, so repeating one
  converges (edited_at may move forward; an UpdateUser repeating the values
  held writes nothing). Both are last-writer-wins: a retry of an update
  whose first answer was lost lands after, and so undoes, another caller's
  change to the same field made in between; DeleteTweet repeated after a lost success
  answers NOT_FOUND rather than deleting anything else;
* PostTweet and CreateUser carry a ``request_id`` (this client always fills
  one in), and the server returns the first tweet for a repeated
  ``(user_id, request_id)`` and the first user for a repeated
  ``(handle, request_id)``, so a retry after a lost success neither posts
  twice nor reports ALREADY_EXISTS for the user just created.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import grpc
from google.protobuf.message import Message

from client.errors import ClientClosed, Internal, InvalidArgument, error_from_rpc
from murmur.v1 import murmur_pb2 as pb
from murmur.v1 import murmur_pb2_grpc as pb_grpc
from murmur.validation import MAX_PAGE_SIZE  # the server's cap: a bigger page is never sent

__all__ = [
    "DEFAULT_TARGET",
    "IDEMPOTENT_METHODS",
    "MAX_TIMEOUT_S",
    "SERVICE_NAME",
    "MurmurClient",
    "channel_options",
    "check_timeout",
    "service_config",
]

DEFAULT_TARGET = "localhost:50051"
# Longest deadline accepted (about 11.6 days). gRPC turns a deadline into a
# 64-bit nanosecond clock value; one past that (1e10 s, inf) overflows and every
# call then fails at once with DEADLINE_EXCEEDED, so refuse it up front instead.
MAX_TIMEOUT_S = 1e6
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Murmur"].full_name  # "murmur.v1.Murmur"

IDEMPOTENT_METHODS: tuple[str, ...] = (
    "CreateUser",
    "GetUser",
    "UpdateUser",
    "Follow",
    "Unfollow",
    "ListFollowers",
    "ListFollowing",
    "PostTweet",
    "GetTweet",
    "EditTweet",
    "DeleteTweet",
    "GetUserTimeline",
    "GetHomeTimeline",
    "Ping",
)

RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

# How long a channel waits before trying a router that refused it again:
# gRPC's own backoff grows to 120 s, so a client that saw the router down
# kept failing fast for ~25 s after it was back (measured: first success 30 s
# after a 1.5 s outage ended). The shards' own channels cap it at 1 s.
RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)
log = logging.getLogger("murmur.client")

_T = TypeVar("_T")
_M = TypeVar("_M", bound=Message)


class _Paged(Protocol):
    next_page_token: str


_P = TypeVar("_P", bound=_Paged)


def service_config() -> str:
    """The JSON service config that retries UNAVAILABLE on the idempotent RPCs."""
    names = [{"service": SERVICE_NAME, "method": m} for m in IDEMPOTENT_METHODS]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}]})


def channel_options(retries: bool = True) -> list[tuple[str, Any]]:
    """Channel options for a Murmur channel; exposed so callers that build their
    own channel (TLS, interceptors) can still get the retry policy and the
    short reconnect backoff."""
    if not retries:
        return list(RECONNECT_OPTIONS)
    return [
        *RECONNECT_OPTIONS,
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config()),
    ]


def build_request(message: type[_M], **fields: Any) -> _M:
    """``message(**fields)``, with a value protobuf cannot carry (a negative
    or 65-bit id, a str for an int, text with a lone surrogate) raised as
    ``InvalidArgument`` naming the field, so that ``except MurmurError``
    catches it as it catches the server's refusals."""
    try:
        return message(**fields)
    except (TypeError, ValueError) as exc:
        for name, value in fields.items():
            try:
                message(**{name: value})
            except (TypeError, ValueError) as field_exc:
                raise InvalidArgument(f"{name} {value!r} cannot be sent: {field_exc}") from exc
        raise InvalidArgument(f"{message.__name__} cannot be built: {exc}") from exc


def check_timeout(name: str, value: float) -> float:
    """``value`` if it is a usable deadline in seconds, else ValueError naming ``name``.

    Checked when a client is built, because a bad deadline (NaN, inf, 1e10 or
    <= 0) is not reported by gRPC as such: every call just fails at once with
    DEADLINE_EXCEEDED, which looks like a slow server.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MAX_TIMEOUT_S
    ):
        raise ValueError(
            f"{name} must be a number of seconds > 0 and <= {MAX_TIMEOUT_S:g}, not {value!r}"
        )
    return value


def open_channel(target: str, options: list[tuple[str, Any]], tls_ca: str | None) -> grpc.Channel:
    """Plain, or TLS trusting the PEM CA file ``tls_ca`` (the router's port
    asks no client certificate)."""
    if not tls_ca:
        return grpc.insecure_channel(target, options=options)
    with open(tls_ca, "rb") as handle:
        credentials = grpc.ssl_channel_credentials(root_certificates=handle.read())
    return grpc.secure_channel(target, credentials, options=options)


class ChannelClient:
    """Closing, and ``with`` support, for clients over one gRPC channel;
    subclasses set ``_channel`` and ``_owns_channel``."""

    target: str
    _channel: grpc.Channel
    _owns_channel: bool
    _closed: bool = False
    _root: ChannelClient | None = None  # the client a ``with_options`` view shares a channel with

    def close(self) -> None:
        """Close the channel if this client created it; either way, later calls
        on this client raise ``ClientClosed``."""
        self._closed = True
        if self._owns_channel:
            self._channel.close()

    def _check_open(self) -> None:
        """Raise ``ClientClosed`` (a ``MurmurError``) rather than let gRPC raise
        a bare ValueError that ``except MurmurError`` would miss."""
        if self._closed or (self._root is not None and self._root._closed):
            raise ClientClosed(f"the client for {self.target} is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MurmurClient(ChannelClient):
    """One connection to a Murmur router. Thread-safe, like the gRPC channel under it.

    ``timeout`` is the deadline in seconds for each call (retries included):
    more than 0 and at most ``MAX_TIMEOUT_S``, else ValueError (there is no
    "no deadline" setting: a call that never gives up hides a dead router).
    After ``close()`` every call raises ``ClientClosed``. Pass ``channel`` to
    reuse an existing channel; the client then does not close it, and
    ``retries`` has no effect (use ``channel_options()`` when building that
    channel).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 10.0,
        channel: grpc.Channel | None = None,
        retries: bool = True,
        tls_ca: str | None = None,
    ) -> None:
        self.target = target
        self.timeout = check_timeout("timeout", timeout)
        self._owns_channel = channel is None
        self._channel = channel or open_channel(target, channel_options(retries), tls_ca)
        self._stub = pb_grpc.MurmurStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"MurmurClient(target={self.target!r}, timeout={self.timeout!r})"

    def with_options(
        self, *, timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()
    ) -> MurmurClient:
        """This client with another deadline for each call (seconds, as for
        the constructor) and ``metadata`` sent with each call (a tracing
        header, say), for one request's budget without a second connection:
        ``murmur.with_options(timeout=0.2).home_timeline(reader)``. The view
        shares this client's channel: it needs no closing, and closing this
        client closes it. Metadata keys are lowercase ASCII, as gRPC wants."""
        view = copy.copy(self)
        view._owns_channel = False
        view._closed = False
        view._root = self._root or self
        if timeout is not None:
            view.timeout = check_timeout("timeout", timeout)
        view._metadata = self._metadata + tuple(metadata)
        return view

    def _call(self, rpc: Callable[..., _T], request: Any) -> _T:
        """Invoke one unary RPC with the deadline, metadata and typed errors."""
        self._check_open()
        try:
            if self._metadata:
                return rpc(request, timeout=self.timeout, metadata=self._metadata)
            return rpc(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    # -- users -------------------------------------------------------------

    def create_user(
        self, handle: str, display_name: str = "", bio: str = "", request_id: str = ""
    ) -> pb.User:
        """Register a user. An empty ``request_id`` gets a fresh uuid4 so that
        the channel's retries return this user rather than ALREADY_EXISTS."""
        request = build_request(
            pb.CreateUserRequest,
            handle=handle,
            display_name=display_name,
            bio=bio,
            request_id=request_id or uuid.uuid4().hex,
        )
        return self._call(self._stub.CreateUser, request)

    def get_user(self, user_id: int | None = None, handle: str | None = None) -> pb.User:
        """Look a user up by exactly one of ``user_id`` or ``handle`` (case-insensitive)."""
        if (user_id is None) == (handle is None):
            raise ValueError("get_user needs exactly one of user_id or handle")
        if isinstance(user_id, str):
            raise InvalidArgument(
                f"user_id must be an integer id; for the handle {user_id!r} pass handle={user_id!r}"
            )
        if user_id is not None:
            request = build_request(pb.GetUserRequest, user_id=user_id)
        else:
            request = build_request(pb.GetUserRequest, handle=handle)
        return self._call(self._stub.GetUser, request)

    def update_user(
        self, user_id: int, *, display_name: str | None = None, bio: str | None = None
    ) -> pb.User:
        """Change a user's display name and/or bio (None leaves one as it is,
        "" clears it); the handle cannot change. Safe to retry: the same
        values again change nothing."""
        if display_name is None and bio is None:
            raise ValueError("update_user needs display_name or bio (or both)")
        fields = {"display_name": display_name, "bio": bio}
        request = build_request(
            pb.UpdateUserRequest,
            user_id=user_id,
            **{name: value for name, value in fields.items() if value is not None},
        )
        return self._call(self._stub.UpdateUser, request)

    def follow(self, follower_id: int, followee_id: int) -> pb.FollowResponse:
        """Make ``follower_id`` follow ``followee_id`` (idempotent)."""
        request = build_request(pb.FollowRequest, follower_id=follower_id, followee_id=followee_id)
        return self._call(self._stub.Follow, request)

    def unfollow(self, follower_id: int, followee_id: int) -> pb.UnfollowResponse:
        """Stop ``follower_id`` following ``followee_id`` (a no-op if it did not)."""
        request = build_request(
            pb.UnfollowRequest, follower_id=follower_id, followee_id=followee_id
        )
        return self._call(self._stub.Unfollow, request)

    def list_followers(
        self, user_id: int, page_size: int = 0, page_token: str = ""
    ) -> pb.ListUsersResponse:
        """One page of ``user_id``'s followers, in user-id order. ``page_size``
        0 means 20, above 200 means 200, below 0 is ``InvalidArgument``;
        ``page_token`` is the ``next_page_token`` of the page before, for the
        same call and ``user_id`` (another is ``InvalidArgument``)."""
        request = build_request(
            pb.ListFollowersRequest, user_id=user_id, page_size=page_size, page_token=page_token
        )
        return self._call(self._stub.ListFollowers, request)

    def list_following(
        self, user_id: int, page_size: int = 0, page_token: str = ""
    ) -> pb.ListUsersResponse:
        """One page of the users ``user_id`` follows, in user-id order;
        ``page_size`` and ``page_token`` as for ``list_followers``."""
        request = build_request(
            pb.ListFollowingRequest, user_id=user_id, page_size=page_size, page_token=page_token
        )
        return self._call(self._stub.ListFollowing, request)

    def iter_followers(
        self, user_id: int, page_size: int = 100, limit: int | None = None, page_token: str = ""
    ) -> Iterator[pb.User]:
        """Every follower of ``user_id`` (at most ``limit``), fetching pages lazily."""
        return _paginate(
            lambda size, token: self.list_followers(user_id, size, token),
            _users,
            page_size=page_size,
            limit=limit,
            page_token=page_token,
        )

    def iter_following(
        self, user_id: int, page_size: int = 100, limit: int | None = None, page_token: str = ""
    ) -> Iterator[pb.User]:
        """Every user ``user_id`` follows (at most ``limit``), fetching pages lazily."""
        return _paginate(
            lambda size, token: self.list_following(user_id, size, token),
            _users,
            page_size=page_size,
            limit=limit,
            page_token=page_token,
        )

    # -- tweets ------------------------------------------------------------

    def post_tweet(self, user_id: int, text: str, request_id: str = "") -> pb.Tweet:
        """Post a tweet. An empty ``request_id`` gets a fresh uuid4 so that the
        channel's automatic retries cannot post it twice; pass your own to make
        retries across separate calls (or processes) safe too."""
        request = build_request(
            pb.PostTweetRequest,
            user_id=user_id,
            text=text,
            request_id=request_id or uuid.uuid4().hex,
        )
        return self._call(self._stub.PostTweet, request)

    def get_tweet(self, tweet_id: int) -> pb.Tweet:
        """Read one tweet."""
        return self._call(self._stub.GetTweet, build_request(pb.GetTweetRequest, tweet_id=tweet_id))

    def edit_tweet(self, tweet_id: int, user_id: int, text: str) -> pb.Tweet:
        """Replace a tweet's text; ``user_id`` must be its author."""
        request = build_request(pb.EditTweetRequest, tweet_id=tweet_id, user_id=user_id, text=text)
        return self._call(self._stub.EditTweet, request)

    def delete_tweet(self, tweet_id: int, user_id: int) -> pb.DeleteTweetResponse:
        """Delete a tweet; ``user_id`` must be its author."""
        request = build_request(pb.DeleteTweetRequest, tweet_id=tweet_id, user_id=user_id)
        return self._call(self._stub.DeleteTweet, request)

    # -- timelines ---------------------------------------------------------

    def user_timeline(
        self, user_id: int, page_size: int = 0, page_token: str = ""
    ) -> pb.TimelineResponse:
        """One page of ``user_id``'s own tweets, newest first; ``page_size``
        and ``page_token`` as for ``list_followers``."""
        request = build_request(
            pb.GetUserTimelineRequest, user_id=user_id, page_size=page_size, page_token=page_token
        )
        return self._call(self._stub.GetUserTimeline, request)

    def home_timeline(
        self, user_id: int, page_size: int = 0, page_token: str = ""
    ) -> pb.TimelineResponse:
        """One page of ``user_id``'s home timeline, newest first (check
        ``partial``); ``page_size`` and ``page_token`` as for ``list_followers``."""
        request = build_request(
            pb.GetHomeTimelineRequest, user_id=user_id, page_size=page_size, page_token=page_token
        )
        return self._call(self._stub.GetHomeTimeline, request)

    def iter_user_timeline(
        self,
        user_id: int,
        page_size: int = 100,
        limit: int | None = None,
        page_token: str = "",
        on_partial: Callable[[pb.TimelineResponse], None] | None = None,
    ) -> Iterator[pb.Tweet]:
        """``user_id``'s tweets, newest first, at most ``limit``, fetched lazily.

        ``on_partial`` is called with every page whose ``partial`` flag is set,
        because a flat stream of tweets would otherwise hide missing shards;
        without it, such a page is logged as a warning (logger
        ``murmur.client``). ``page_size`` as for ``user_timeline``.
        """
        return _paginate(
            lambda size, token: self.user_timeline(user_id, size, token),
            _tweets,
            page_size=page_size,
            limit=limit,
            page_token=page_token,
            on_page=_partial_hook(on_partial, f"the timeline of user {user_id}"),
        )

    def iter_home_timeline(
        self,
        user_id: int,
        page_size: int = 100,
        limit: int | None = None,
        page_token: str = "",
        on_partial: Callable[[pb.TimelineResponse], None] | None = None,
    ) -> Iterator[pb.Tweet]:
        """``user_id``'s home timeline, newest first, at most ``limit``, fetched
        lazily; ``on_partial`` as for ``iter_user_timeline``."""
        return _paginate(
            lambda size, token: self.home_timeline(user_id, size, token),
            _tweets,
            page_size=page_size,
            limit=limit,
            page_token=page_token,
            on_page=_partial_hook(on_partial, f"the home timeline of user {user_id}"),
        )

    # -- misc --------------------------------------------------------------

    def ping(self, user_id: int = 0) -> pb.PingResponse:
        """Round-trip through a router to the shard owning ``user_id`` (0: slot 0's)."""
        return self._call(self._stub.Ping, build_request(pb.PingRequest, user_id=user_id))


def _users(page: pb.ListUsersResponse) -> Sequence[pb.User]:
    return page.users


def _tweets(page: pb.TimelineResponse) -> Sequence[pb.Tweet]:
    return page.tweets


def _partial_hook(
    on_partial: Callable[[pb.TimelineResponse], None] | None, listing: str
) -> Callable[[pb.TimelineResponse], None]:
    """Hand each partial page to ``on_partial``; without one, log a warning:
    a flat stream of tweets would hide the shards that did not answer, and
    the pages after it move on past the tweets they held."""

    def hook(page: pb.TimelineResponse) -> None:
        if not page.partial:
            return
        if on_partial is not None:
            on_partial(page)
            return
        shards = ", ".join(str(s) for s in page.unavailable_shards) or "unknown"
        log.warning(
            "%s is partial: shards %s did not answer, and their tweets are missing "
            "(pass on_partial to handle this)",
            listing,
            shards,
        )

    return hook


def _paginate(
    fetch: Callable[[int, str], _P],
    items: Callable[[_P], Sequence[_T]],
    *,
    page_size: int,
    limit: int | None,
    page_token: str,
    on_page: Callable[[_P], None] | None = None,
) -> Iterator[_T]:
    """Yield items page after page, following ``next_page_token`` until it is empty.

    Lazy, so a caller that stops early fetches no further pages. Never asks
    for more than the ``limit`` still wanted (``limit=5`` does not fetch 100)
    and never yields more than ``limit`` even if a server sends a bigger page.
    A server that hands back the token it was given would make this loop
    forever; that is raised as INTERNAL instead.
    """
    remaining = limit
    token = page_token
    while remaining is None or remaining > 0:
        size = page_size
        if remaining is not None and (size <= 0 or size > remaining):
            size = min(remaining, MAX_PAGE_SIZE)
        page = fetch(size, token)
        if on_page is not None:
            on_page(page)
        for item in items(page):
            if remaining is not None:
                if remaining <= 0:
                    return
                remaining -= 1
            yield item
        next_token = page.next_page_token
        if not next_token:
            return
        if next_token == token:
            raise Internal(f"server returned page token {token!r} again; paging would loop")
        token = next_token
