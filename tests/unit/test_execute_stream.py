"""The router's stream to a shard, against a real in-process aio server: answers
by id in any order, a deadline per batch, and a shard that stops or goes away."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from murmur.execute_stream import ShardStream
from murmur.registration import add_service
from murmur.v1 import murmur_pb2, shard_pb2, shard_pb2_grpc
from shard.batch_execute import BatchStreams

SERVICE = shard_pb2.DESCRIPTOR.services_by_name["Shard"]


class SlowWriteShard(shard_pb2_grpc.ShardServicer):
    """Answers Ping at once; a PostTweet (a write, so it runs as a task)
    waits until the test releases it."""

    component = "shard 9"

    def __init__(self) -> None:
        self.batch_streams = BatchStreams(self)
        self.release = asyncio.Event()
        self.entered = asyncio.Event()  # a PostTweet is running
        self.address = ""

    async def running(self) -> None:
        """Until a write runs on the shard: on a busy machine a fixed sleep
        was sometimes too short for the stream to open."""
        await asyncio.wait_for(self.entered.wait(), 10.0)

    async def Ping(self, request: Any, context: Any) -> murmur_pb2.PingResponse:
        return murmur_pb2.PingResponse(shard_id=9)

    async def PostTweet(self, request: Any, context: Any) -> murmur_pb2.Tweet:
        self.entered.set()
        await self.release.wait()
        return murmur_pb2.Tweet(tweet_id=5, text=request.text)

    async def ExecuteStream(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self.batch_streams.serve(requests, context)


def ping() -> list[shard_pb2.ShardCall]:
    return [shard_pb2.ShardCall(method="Ping", request=b"")]


def post(text: str) -> list[shard_pb2.ShardCall]:
    request = murmur_pb2.PostTweetRequest(user_id=1, text=text).SerializeToString()
    return [shard_pb2.ShardCall(method="PostTweet", request=request)]


def with_shard(
    scenario: Callable[[SlowWriteShard, grpc.aio.Server, ShardStream], Awaitable[None]],
) -> None:
    async def run() -> None:
        shard = SlowWriteShard()
        server = grpc.aio.server()
        add_service(server, shard, SERVICE)
        shard.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        channel = grpc.aio.insecure_channel(shard.address)
        stream = ShardStream(shard_pb2_grpc.ShardStub(channel))
        try:
            await scenario(shard, server, stream)
        finally:
            shard.release.set()
            stream.close()
            await channel.close()
            await server.stop(0)

    asyncio.run(run())


def test_a_read_is_answered_while_a_write_before_it_still_waits() -> None:
    async def scenario(shard: SlowWriteShard, _server: Any, stream: ShardStream) -> None:
        write = asyncio.ensure_future(stream.execute(post("first"), 5.0))
        [pong] = await stream.execute(ping(), 5.0)
        assert murmur_pb2.PingResponse.FromString(pong.response).shard_id == 9
        assert not write.done()
        shard.release.set()
        [tweet] = await write
        assert tweet.code == 0
        assert murmur_pb2.Tweet.FromString(tweet.response).text == "first"

    with_shard(scenario)


def test_a_batch_not_answered_in_time_fails_alone() -> None:
    async def scenario(_shard: SlowWriteShard, _server: Any, stream: ShardStream) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.execute(post("late"), 0.1)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        [pong] = await stream.execute(ping(), 5.0)  # the stream itself is fine
        assert pong.code == 0

    with_shard(scenario)


def test_a_stopping_shard_answers_what_it_began_then_ends_the_stream() -> None:
    async def scenario(shard: SlowWriteShard, _server: Any, stream: ShardStream) -> None:
        write = asyncio.ensure_future(stream.execute(post("begun"), 5.0))
        await shard.running()
        closing = asyncio.ensure_future(shard.batch_streams.close())
        await asyncio.sleep(0.05)
        [refused] = await stream.execute(ping(), 5.0)
        assert refused.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert "shard 9 is stopping" in refused.message
        shard.release.set()
        [tweet] = await write
        assert tweet.code == 0  # acknowledged before the stream ended
        await closing
        assert not shard.batch_streams.open
        for _ in range(200):  # the stream's status reaches the router's reader
            if stream.connection is None or stream.connection.ended:
                break
            await asyncio.sleep(0.01)
        assert stream.connection is not None and stream.connection.ended
        # the next batch opens a new stream, which the stopping shard refuses
        with pytest.raises(grpc.aio.AioRpcError) as refused_stream:
            await stream.execute(ping(), 5.0)
        assert refused_stream.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shard 9 is stopping" in (refused_stream.value.details() or "")
        # and once the shard is back (here: fresh stream state), the one after that is served
        shard.batch_streams = BatchStreams(shard)
        [pong] = await stream.execute(ping(), 5.0)
        assert pong.code == 0

    with_shard(scenario)


def test_a_shard_that_goes_away_fails_the_batch_waiting_on_it() -> None:
    async def scenario(shard: SlowWriteShard, server: grpc.aio.Server, stream: ShardStream) -> None:
        write = asyncio.ensure_future(stream.execute(post("lost"), 5.0))
        await shard.running()
        connection = stream.connection
        assert connection is not None
        await server.stop(0)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await write
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        await asyncio.sleep(0.01)
        # its tasks end with it: none is left pending when the connection is dropped
        assert connection.reader.done() and connection.writer.done()
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await stream.execute(ping(), 1.0)
        assert again.value.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )

    with_shard(scenario)


def test_stopping_after_the_caller_hung_up_ends_quietly() -> None:
    async def scenario(shard: SlowWriteShard, _server: Any, stream: ShardStream) -> None:
        write = asyncio.ensure_future(stream.execute(post("orphan"), 5.0))
        await shard.running()
        [opened] = shard.batch_streams.open
        closing = asyncio.ensure_future(shard.batch_streams.close())
        await asyncio.sleep(0.05)
        stream.close()  # the router goes away while the shard waits for the write
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await write
        assert caught.value.code() == grpc.StatusCode.CANCELLED  # at once, not at its deadline
        await asyncio.sleep(0.05)
        shard.release.set()
        await closing  # neither the lost answer nor the status may raise here
        assert opened.closing

    with_shard(scenario)


def test_a_message_that_does_not_parse_ends_the_stream_invalid_argument() -> None:
    async def scenario(shard: SlowWriteShard, _server: Any, _stream: ShardStream) -> None:
        async with grpc.aio.insecure_channel(shard.address) as channel:
            raw = channel.stream_stream("/murmur.v1.Shard/ExecuteStream")()  # bytes as they are
            await raw.write(b"\x0a\xff")  # field 1, length-delimited, running past the end
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "murmur.v1.ExecuteStreamRequest" in (caught.value.details() or "")

    with_shard(scenario)


def test_a_host_that_never_answers_fails_each_batch_at_its_deadline() -> None:
    """A write that cannot go out (no HTTP/2 on the other end, here a bare
    socket) must not hold the batch past its deadline; the stuck stream is
    dropped so the next batch starts afresh."""

    async def scenario() -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(4)
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{listener.getsockname()[1]}"
            ) as channel:
                stream = ShardStream(shard_pb2_grpc.ShardStub(channel))
                for _ in range(2):
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        # the guard only turns a hang into a failure: gRPC's own
                        # connect timeout (20 s) is what the deadline must beat
                        await asyncio.wait_for(stream.execute(ping(), 0.2), 10.0)
                    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                    assert stream.connection is not None and stream.connection.ended
                stream.close()

    asyncio.run(scenario())
