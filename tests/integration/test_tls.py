"""The cluster under TLS: every port encrypted, router <-> shard and shard <->
shard with mutual TLS, and shards refusing anyone without a cluster
certificate (a public client cannot call them)."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from client import MurmurClient
from client.errors import Unavailable
from deploy.dev_ca import write_dev_ca
from murmur.v1 import shard_pb2, shard_pb2_grpc
from tests.integration.cluster import ROOT, LocalCluster, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def certs(tmp_path):
    return write_dev_ca(tmp_path / "certs", ["localhost", "127.0.0.1"])


@pytest.fixture
def tls_cluster(tmp_path, certs):
    flags = [
        "--tls-cert",
        str(certs["cert"]),
        "--tls-key",
        str(certs["key"]),
        "--tls-ca",
        str(certs["ca"]),
    ]
    with LocalCluster(tmp_path / "cluster", shards=2, extra_args=flags) as cluster:
        yield cluster


def test_the_api_works_over_tls_with_mutual_tls_inside(tls_cluster, certs):
    with MurmurClient(tls_cluster.target, tls_ca=str(certs["ca"])) as client:
        a = client.create_user(tls_cluster.handle_on_shard(0, "tlsa"))
        b = client.create_user(tls_cluster.handle_on_shard(1, "tlsb"))
        client.follow(b.user_id, a.user_id)  # crosses shards: shard-to-shard mTLS
        tweet = client.post_tweet(a.user_id, "over TLS")
        eventually(
            lambda: (
                [t.tweet_id for t in client.home_timeline(b.user_id).tweets] == [tweet.tweet_id]
                or (_ for _ in ()).throw(AssertionError("not delivered yet"))
            ),
            timeout=10,
        )
        assert client.get_user(user_id=a.user_id).follower_count == 1


def test_a_plaintext_client_cannot_talk_to_a_tls_router(tls_cluster):
    with MurmurClient(tls_cluster.target, timeout=2, retries=False) as client:
        with pytest.raises(Unavailable):
            client.ping()


def test_shards_refuse_callers_without_a_cluster_certificate(tls_cluster, certs):
    address = tls_cluster.shard_address(0)
    only_ca = grpc.ssl_channel_credentials(root_certificates=certs["ca"].read_bytes())
    with grpc.secure_channel(address, only_ca) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            shard_pb2_grpc.ShardStub(channel).GetShardInfo(
                shard_pb2.GetShardInfoRequest(), timeout=3
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError):
            shard_pb2_grpc.ShardStub(channel).GetShardInfo(
                shard_pb2.GetShardInfoRequest(), timeout=3
            )


def test_an_operator_certificate_reaches_a_shard_directly(tls_cluster, certs):
    """The dev CA's client.pem is what the README hands operators for calling
    shards themselves (grpcurl -cert/-key): it must get through."""
    operator = grpc.ssl_channel_credentials(
        root_certificates=certs["ca"].read_bytes(),
        private_key=certs["client_key"].read_bytes(),
        certificate_chain=certs["client_cert"].read_bytes(),
    )
    with grpc.secure_channel(tls_cluster.shard_address(0), operator) as channel:
        info = shard_pb2_grpc.ShardStub(channel).GetShardInfo(
            shard_pb2.GetShardInfoRequest(), timeout=10
        )
    assert info.shard_id == 0


def test_the_cli_speaks_tls(tls_cluster, certs):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "client.cli",
            "--target",
            tls_cluster.target,
            "--tls-ca",
            str(certs["ca"]),
            "ping",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
