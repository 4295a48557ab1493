"""The join design, for comparison: the original schema (users, follows,
tweets) in SQLite, embedded in a gRPC server that speaks ``murmur.v1.Murmur``.

The home timeline is the textbook join::

    SELECT ... FROM follows JOIN tweets ON tweets.author = follows.followee
     WHERE follows.follower = ?  UNION ALL  <the reader's own tweets>
     ORDER BY id DESC LIMIT ?

with proper indexes: follows(follower, followee) (the primary key),
follows(followee, follower) for follower counts and listings, and
tweets(author, id DESC). WAL mode, ``synchronous=NORMAL`` (durable against a
process crash; a power cut may lose the last commits, which favours the join
over Murmur's fsync-per-group). One process, one connection, queries run on
the event loop thread: the embedded-database design as commonly deployed.

    python -m bench.join_server --port 0 --db PATH
prints ``join-server serving on 127.0.0.1:<port>`` once serving.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sqlite3
import time
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from murmur.v1 import murmur_pb2 as pb
from murmur.v1 import murmur_pb2_grpc as pb_grpc

SCHEMA = """
CREATE TABLE IF NOT EXISTS users(
    id INTEGER PRIMARY KEY,
    handle TEXT NOT NULL UNIQUE COLLATE NOCASE,
    display_name TEXT NOT NULL DEFAULT '',
    bio TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    follower_count INTEGER NOT NULL DEFAULT 0,
    following_count INTEGER NOT NULL DEFAULT 0,
    tweet_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS follows(
    follower INTEGER NOT NULL,
    followee INTEGER NOT NULL,
    PRIMARY KEY (follower, followee)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS follows_by_followee ON follows(followee, follower);
CREATE TABLE IF NOT EXISTS tweets(
    id INTEGER PRIMARY KEY,
    author INTEGER NOT NULL,
    text TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tweets_by_author ON tweets(author, id DESC);
CREATE TABLE IF NOT EXISTS requests(
    author INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    tweet_id INTEGER NOT NULL,
    PRIMARY KEY (author, request_id)
) WITHOUT ROWID;
"""

HOME_SQL = """
SELECT id, author, text, created_ms FROM (
    SELECT t.id, t.author, t.text, t.created_ms
      FROM follows f JOIN tweets t ON t.author = f.followee
     WHERE f.follower = :reader AND t.id < :before
    UNION ALL
    SELECT id, author, text, created_ms FROM tweets
     WHERE author = :reader AND id < :before
) ORDER BY id DESC LIMIT :limit
"""
USER_SQL = (
    "SELECT id, author, text, created_ms FROM tweets WHERE author = ? AND id < ? "
    "ORDER BY id DESC LIMIT ?"
)
HANDLE = re.compile(r"^[A-Za-z0-9_]{1,15}$")
NO_BOUND = (1 << 63) - 1


def connect(path: Path | str) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA cache_size=-65536")
    db.executescript(SCHEMA)
    return db


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def build_db(
    path: Path,
    handles: list[str],
    edges: Iterable[tuple[int, int]],
    tweets: Iterable[tuple[int, str]] = (),
) -> list[int]:
    """Bulk-load a prepared database (user i gets id i+1); returns the ids.
    Edges and tweets name users by index into ``handles``."""
    db = connect(path)
    created = now_ms()
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO users(id, handle, created_ms) VALUES (?, ?, ?)",
        ((i + 1, h, created) for i, h in enumerate(handles)),
    )
    db.executemany(
        "INSERT OR IGNORE INTO follows(follower, followee) VALUES (?, ?)",
        ((a + 1, b + 1) for a, b in edges),
    )
    db.executemany(
        "INSERT INTO tweets(author, text, created_ms) VALUES (?, ?, ?)",
        ((a + 1, text, created) for a, text in tweets),
    )
    db.execute(
        "UPDATE users SET "
        "follower_count = (SELECT COUNT(*) FROM follows WHERE followee = users.id), "
        "following_count = (SELECT COUNT(*) FROM follows WHERE follower = users.id), "
        "tweet_count = (SELECT COUNT(*) FROM tweets WHERE author = users.id)"
    )
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()
    return [i + 1 for i in range(len(handles))]


def home_query_ms(path: Path | str, readers: list[int], repeats: int) -> list[float]:
    """Milliseconds per home-timeline join run in this process on its own
    connection: what the query costs without the gRPC call that carries it,
    so a read's latency can be split into the two."""
    db = connect(path)
    try:
        samples = []
        for _ in range(repeats):
            for reader in readers:
                start = time.perf_counter()
                db.execute(HOME_SQL, {"reader": reader, "before": NO_BOUND, "limit": 20}).fetchall()
                samples.append((time.perf_counter() - start) * 1000.0)
        return samples
    finally:
        db.close()


def _timestamp(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def _tweet(row: tuple) -> pb.Tweet:
    return pb.Tweet(tweet_id=row[0], user_id=row[1], text=row[2], created_at=_timestamp(row[3]))


def _page_size(size: int) -> int:
    return 20 if size <= 0 else min(size, 200)


def _before(token: str) -> int:
    if not token:
        return NO_BOUND
    try:
        return int(token)
    except ValueError:
        raise ValueError("page_token is not a token this server issued") from None


class JoinServicer(pb_grpc.MurmurServicer):
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def _user(self, user_id: int) -> pb.User | None:
        row = self.db.execute(
            "SELECT id, handle, display_name, bio, follower_count, following_count, "
            "tweet_count, created_ms FROM users WHERE id = ?",
            (user_id,),
        ).fetchone()
        if row is None:
            return None
        return pb.User(
            user_id=row[0],
            handle=row[1],
            display_name=row[2],
            bio=row[3],
            follower_count=row[4],
            following_count=row[5],
            tweet_count=row[6],
            created_at=_timestamp(row[7]),
        )

    async def _require(self, user_id: int, role: str, context) -> pb.User:
        user = self._user(user_id)
        if user is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{role} {user_id} does not exist")
        return user

    async def CreateUser(self, request, context):
        if not HANDLE.match(request.handle):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "handle must be 1-15 of A-Z a-z 0-9 _"
            )
        try:
            cursor = self.db.execute(
                "INSERT INTO users(handle, display_name, bio, created_ms) VALUES (?, ?, ?, ?)",
                (request.handle, request.display_name, request.bio, now_ms()),
            )
        except sqlite3.IntegrityError:
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS, f"handle {request.handle!r} is taken"
            )
        return self._user(cursor.lastrowid)

    async def GetUser(self, request, context):
        if request.WhichOneof("key") == "handle":
            row = self.db.execute(
                "SELECT id FROM users WHERE handle = ?", (request.handle,)
            ).fetchone()
            if row is None:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND, f"no user has the handle {request.handle!r}"
                )
            return self._user(row[0])
        return await self._require(request.user_id, "user", context)

    async def Follow(self, request, context):
        follower, followee = request.follower_id, request.followee_id
        if follower == followee:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "you cannot follow yourself")
        await self._require(follower, "follower", context)
        await self._require(followee, "followee", context)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            cursor = db.execute(
                "INSERT OR IGNORE INTO follows(follower, followee) VALUES (?, ?)",
                (follower, followee),
            )
            if cursor.rowcount:
                db.execute(
                    "UPDATE users SET following_count = following_count + 1 WHERE id = ?",
                    (follower,),
                )
                db.execute(
                    "UPDATE users SET follower_count = follower_count + 1 WHERE id = ?",
                    (followee,),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return pb.FollowResponse()

    async def PostTweet(self, request, context):
        author = request.user_id
        text = unicodedata.normalize("NFC", request.text)
        if not text.strip() or len(text) > 280:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "text must be 1-280 characters")
        await self._require(author, "user", context)
        db = self.db
        if request.request_id:
            row = db.execute(
                "SELECT tweet_id FROM requests WHERE author = ? AND request_id = ?",
                (author, request.request_id),
            ).fetchone()
            if row is not None:
                found = db.execute(
                    "SELECT id, author, text, created_ms FROM tweets WHERE id = ?", (row[0],)
                ).fetchone()
                if found is not None:
                    return _tweet(found)
        created = now_ms()
        db.execute("BEGIN IMMEDIATE")
        try:
            cursor = db.execute(
                "INSERT INTO tweets(author, text, created_ms) VALUES (?, ?, ?)",
                (author, text, created),
            )
            tweet_id = cursor.lastrowid
            db.execute("UPDATE users SET tweet_count = tweet_count + 1 WHERE id = ?", (author,))
            if request.request_id:
                db.execute(
                    "INSERT OR REPLACE INTO requests(author, request_id, tweet_id) "
                    "VALUES (?, ?, ?)",
                    (author, request.request_id, tweet_id),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return _tweet((tweet_id, author, text, created))

    async def GetTweet(self, request, context):
        row = self.db.execute(
            "SELECT id, author, text, created_ms FROM tweets WHERE id = ?", (request.tweet_id,)
        ).fetchone()
        if row is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"tweet {request.tweet_id} does not exist"
            )
        return _tweet(row)

    async def _timeline(self, sql: str, params, limit: int) -> pb.TimelineResponse:
        rows = self.db.execute(sql, params).fetchall()
        tweets = [_tweet(row) for row in rows]
        token = str(tweets[-1].tweet_id) if len(tweets) == limit else ""
        return pb.TimelineResponse(tweets=tweets, next_page_token=token)

    async def GetUserTimeline(self, request, context):
        limit = _page_size(request.page_size)
        try:
            before = _before(request.page_token)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await self._require(request.user_id, "user", context)
        return await self._timeline(USER_SQL, (request.user_id, before, limit), limit)

    async def GetHomeTimeline(self, request, context):
        limit = _page_size(request.page_size)
        try:
            before = _before(request.page_token)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await self._require(request.user_id, "user", context)
        params = {"reader": request.user_id, "before": before, "limit": limit}
        return await self._timeline(HOME_SQL, params, limit)

    async def Ping(self, request, context):
        return pb.PingResponse(shard_id=0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="join-server", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--db", required=True, help="SQLite file (created if absent)")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    db = connect(args.db)
    server = grpc.aio.server()
    pb_grpc.add_MurmurServicer_to_server(JoinServicer(db), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        raise SystemExit(f"cannot listen on {args.host}:{args.port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"join-server serving on {args.host}:{port}", flush=True)
    await stop.wait()
    await server.stop(2.0)
    db.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
        return
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
