"""The operator token guards every Admin RPC, and Admin is its own service.

Every RPC of ``murmur.v1.Admin`` is tried without a token, with a wrong one,
and on a router that has no token configured; none may do any work. The
public service must not offer operator verbs, a shard must not serve Admin
at all, and the token must not leak into logs or error messages.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from client.admin_client import ADMIN_SERVICE_NAME, AdminClient
from client.client import MurmurClient
from client.errors import (
    FailedPrecondition,
    MurmurError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from deploy.dev_ca import write_dev_ca
from murmur.v1 import admin_pb2, admin_pb2_grpc
from tests.admin.launcher import Processes, Server

pytestmark = pytest.mark.integration

ROUTER_LOG_ARGS = ("--log-level", "DEBUG")


class Cluster:
    def __init__(self, procs: Processes, token: str) -> None:
        self.procs = procs
        self.token = token
        self.shard: Server = procs.shard(0)
        self.router: Server = procs.router([self.shard.address], token, extra_args=ROUTER_LOG_ARGS)
        # a second router on the same shard, started without any token
        self.open_router: Server = procs.router(
            [self.shard.address], None, name="router-no-token", extra_args=ROUTER_LOG_ARGS
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    token = "tok-" + secrets.token_hex(16)
    with Processes(tmp_path_factory.mktemp("auth")) as procs:
        yield Cluster(procs, token)


def _calls(scratch: Path) -> dict[str, Callable[[AdminClient], Any]]:
    """One harmless call per Admin RPC (harmless even if the guard were missing)."""
    return {
        "GetClusterStatus": lambda c: c.get_cluster_status(),
        "GetShardStats": lambda c: c.get_shard_stats(0),
        "MoveSlots": lambda c: list(c.move_slots([0], 0)),
        "Rebalance": lambda c: list(c.rebalance(dry_run=True)),
        "DrainShard": lambda c: list(c.drain_shard(0)),
        "AddShard": lambda c: c.add_shard("127.0.0.1:1"),
        "RemoveShard": lambda c: c.remove_shard(99),
        "CompactShard": lambda c: c.compact_shard(99),
        "BackupShard": lambda c: list(c.backup_shard(99, str(scratch / "never"))),
        "GetSettings": lambda c: c.get_settings(),
        "UpdateSettings": lambda c: c.update_settings(),
        "CheckConsistency": lambda c: c.check_consistency([0]),
        "Repair": lambda c: c.repair([0]),
    }


ADMIN_METHODS = sorted(admin_pb2.DESCRIPTOR.services_by_name["Admin"].methods_by_name)


def test_every_admin_rpc_is_covered(tmp_path: Path) -> None:
    assert sorted(_calls(tmp_path)) == ADMIN_METHODS


def _refused(call: Callable[[AdminClient], Any], client: AdminClient) -> MurmurError:
    with pytest.raises(MurmurError) as caught:
        call(client)
    return caught.value


@pytest.mark.parametrize("method", ADMIN_METHODS)
def test_without_token_unauthenticated(cluster: Cluster, tmp_path: Path, method: str) -> None:
    with AdminClient(cluster.router.address, None, timeout=10) as admin:
        error = _refused(_calls(tmp_path)[method], admin)
    assert isinstance(error, Unauthenticated), repr(error)
    assert "authorization" in error.details


@pytest.mark.parametrize("method", ADMIN_METHODS)
def test_wrong_token_permission_denied(cluster: Cluster, tmp_path: Path, method: str) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    with AdminClient(cluster.router.address, wrong, timeout=10) as admin:
        error = _refused(_calls(tmp_path)[method], admin)
    assert isinstance(error, PermissionDenied), repr(error)
    assert wrong not in str(error) and cluster.token not in str(error)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("method", ADMIN_METHODS)
def test_router_without_token_refuses_everything(
    cluster: Cluster, tmp_path: Path, method: str
) -> None:
    # even the token of the other router, or none at all, gets FAILED_PRECONDITION
    for token in (cluster.token, None):
        with AdminClient(cluster.open_router.address, token, timeout=10) as admin:
            error = _refused(_calls(tmp_path)[method], admin)
        assert isinstance(error, FailedPrecondition), repr(error)
        assert "--admin-token" in error.details
    assert not (tmp_path / "never").exists()


def _raw_status(address: str, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    return _raw_answer(address, metadata)[0]


def _raw_answer(address: str, metadata: tuple[tuple[str, str], ...]) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(address) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        try:
            request = admin_pb2.GetClusterStatusRequest()
            stub.GetClusterStatus(request, metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def test_a_token_without_the_bearer_scheme_is_told_so(cluster: Cluster) -> None:
    """A bare token used to hear "the operator token is not valid", which
    sent the operator after the wrong mistake."""
    bare = ("Bearer", "Bearer ", "bearer  ")
    for value in (cluster.token, f"Basic {cluster.token}", f"Token {cluster.token}", *bare):
        code, details = _raw_answer(cluster.router.address, (("authorization", value),))
        assert code == grpc.StatusCode.UNAUTHENTICATED, value
        assert "must read 'Bearer <operator token>'" in details, details
        assert cluster.token not in details
    spaced = _raw_status(cluster.router.address, (("authorization", f"Bearer  {cluster.token}"),))
    assert spaced == grpc.StatusCode.OK  # gRPC sends no tab in a header; spaces part them


def test_authorization_header_forms(cluster: Cluster) -> None:
    address, token = cluster.router.address, cluster.token
    assert _raw_status(address, (("authorization", f"Bearer {token}"),)) == grpc.StatusCode.OK
    # the scheme is case-insensitive (RFC 6750 / RFC 7235)
    assert _raw_status(address, (("authorization", f"bearer {token}"),)) == grpc.StatusCode.OK
    refused = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
    for value in (f"Basic {token}", token, "Bearer", "Bearer ", f"Bearer {token}x"):
        assert _raw_status(address, (("authorization", value),)) in refused, value
    assert _raw_status(address, (("x-token", token),)) == grpc.StatusCode.UNAUTHENTICATED
    right, wrong = ("authorization", f"Bearer {token}"), ("authorization", "Bearer x")
    for both in ((right, wrong), (wrong, right), (right, right)):  # which one counts? neither
        assert _raw_status(address, both) == grpc.StatusCode.UNAUTHENTICATED, both


def test_right_token_works(cluster: Cluster) -> None:
    with AdminClient(cluster.router.address, cluster.token) as admin:
        status = admin.get_cluster_status()
        assert [s.shard_id for s in status.shards] == [0]
        assert status.shards[0].slot_count == 4096
        assert status.shards[0].health == "SERVING"
        assert admin.get_settings().inbox_cap > 0
        assert cluster.token not in repr(admin)


def _services(address: str) -> tuple[list[str], descriptor_pool.DescriptorPool]:
    channel = grpc.insecure_channel(address)
    database = ProtoReflectionDescriptorDatabase(channel)
    return sorted(database.get_services()), descriptor_pool.DescriptorPool(database)


def test_reflection_lists_admin_as_its_own_service(cluster: Cluster) -> None:
    names, pool = _services(cluster.router.address)
    assert "murmur.v1.Murmur" in names
    assert ADMIN_SERVICE_NAME in names
    public = {m.name for m in pool.FindServiceByName("murmur.v1.Murmur").methods}
    admin = {m.name for m in pool.FindServiceByName(ADMIN_SERVICE_NAME).methods}
    assert admin == set(ADMIN_METHODS)
    assert "CreateUser" in public and "GetHomeTimeline" in public
    assert not public & admin, f"public service offers operator verbs: {public & admin}"
    assert not {"Repair", "Compact", "Backup", "MigrateSlots", "UpdateSettings"} & public


def test_shard_does_not_serve_admin(cluster: Cluster) -> None:
    names, _ = _services(cluster.shard.address)
    assert ADMIN_SERVICE_NAME not in names
    assert "murmur.v1.Shard" in names
    with AdminClient(cluster.shard.address, cluster.token, timeout=10) as admin:
        with pytest.raises(MurmurError) as caught:
            admin.get_cluster_status()
    assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED


def test_public_api_needs_no_token(cluster: Cluster) -> None:
    with MurmurClient(cluster.router.address) as murmur:
        assert murmur.ping().shard_id == 0


def test_token_never_logged_or_echoed(cluster: Cluster, tmp_path: Path) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    details = []
    for token in (None, wrong, cluster.token):
        for address in (cluster.router.address, cluster.open_router.address):
            with AdminClient(address, token, timeout=10) as admin:
                for call in _calls(tmp_path).values():
                    try:
                        call(admin)
                    except MurmurError as exc:
                        details.append(str(exc))
    # the CLI too: a wrong token from the environment is neither printed nor logged
    env = dict(os.environ, MURMUR_TARGET=cluster.router.address, MURMUR_ADMIN_TOKEN=wrong)
    cli = subprocess.run(
        [sys.executable, "-m", "client.admin_cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1
    assert cli.stderr.startswith("error: PERMISSION_DENIED: ")
    details.append(cli.stdout + cli.stderr)
    logs = [cluster.router.log(), cluster.open_router.log(), cluster.shard.log()]
    assert any("DEBUG" in log for log in logs[:2]), "routers did not log at DEBUG"
    for secret in (cluster.token, wrong):
        assert not [d for d in details if secret in d], f"{secret[:4]}… echoed in an error"
        for log in logs:
            assert secret not in log, "a token was written to a server log"
    # the token travels in the environment, not on the router's command line
    cmdline = Path(f"/proc/{cluster.router.pid}/cmdline").read_bytes()
    assert cluster.token.encode() not in cmdline


def test_admin_over_tls(tmp_path: Path) -> None:
    certs = write_dev_ca(tmp_path / "certs", ["localhost", "127.0.0.1"])
    flags = ("--tls-cert", str(certs["cert"]), "--tls-key", str(certs["key"]))
    flags += ("--tls-ca", str(certs["ca"]))
    token = secrets.token_hex(16)
    with Processes(tmp_path / "tls") as procs:
        shard = procs.shard(0, extra_args=flags)
        router = procs.router([shard.address], token, extra_args=flags)
        with AdminClient(router.address, token, tls_ca=str(certs["ca"])) as admin:
            assert admin.get_cluster_status().shards[0].health == "SERVING"
        with AdminClient(router.address, token, timeout=3, retries=False) as plain:
            with pytest.raises(Unavailable):
                plain.get_cluster_status()
        env = dict(os.environ, MURMUR_TARGET=router.address, MURMUR_ADMIN_TOKEN=token)
        cli = subprocess.run(
            [sys.executable, "-m", "client.admin_cli", "--tls-ca", str(certs["ca"]), "status"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        assert "SERVING" in cli.stdout
