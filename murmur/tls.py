"""TLS for every port, and mutual TLS inside the cluster.

A process started with ``--tls-cert/--tls-key/--tls-ca`` serves TLS with that
certificate and dials other Murmur servers with it as its client identity,
trusting only the cluster CA. Shards require a client certificate signed by
that CA, so only routers and other shards can call them; a router's public
port asks no client certificate. ``configure`` is called once at start-up;
every internal channel is opened through ``aio_channel``/``sync_channel``.
"""

from __future__ import annotations

import argparse
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    cert: bytes
    key: bytes
    ca: bytes

    @classmethod
    def load(cls, cert: str, key: str, ca: str) -> TlsFiles:
        try:
            return cls(Path(cert).read_bytes(), Path(key).read_bytes(), Path(ca).read_bytes())
        except OSError as exc:
            raise SystemExit(f"cannot read TLS file: {exc}") from None

    def server_credentials(self, require_client_cert: bool) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca,
            require_client_auth=require_client_cert,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


_cluster_tls: TlsFiles | None = None

PEM_BLOCKS = {
    "certificate": re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S),
    "private key": re.compile(
        rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S
    ),
}
PEM_HEADERS = {
    "certificate": "-----BEGIN CERTIFICATE-----",
    "private key": "-----BEGIN ... PRIVATE KEY-----",
}


def pem_problem(data: bytes, kind: str) -> str | None:
    """Why ``data`` is not a PEM file holding a ``kind`` ("certificate" or
    "private key"), or None. gRPC looks inside such a file only at the first
    handshake and then reports C-core errors and UNAVAILABLE "Failed to create
    security handshaker", as if the peer were down; a look when the flag is
    read names the flag and the file instead."""
    if PEM_BLOCKS[kind].search(data):
        return None
    return f"holds no PEM {kind} (no {PEM_HEADERS[kind]} block)"


def pem_flag(kind: str) -> Callable[[str], str]:
    """An argparse type for a TLS flag: the path of a readable file holding a
    PEM ``kind``. The path is kept (murmur-cluster passes it on to its
    children); the file is read again by ``TlsFiles.load``."""

    def pem_file(path: str) -> str:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror or exc}") from None
        problem = pem_problem(data, kind)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{path} {problem}")
        return path

    return pem_file


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The three TLS flags, each file checked when parsed (a usage error, exit
    2, naming the flag) rather than at the first handshake."""
    parser.add_argument(
        "--tls-cert",
        type=pem_flag("certificate"),
        help="PEM certificate of this server (enables TLS)",
    )
    parser.add_argument(
        "--tls-key", type=pem_flag("private key"), help="PEM private key for --tls-cert"
    )
    parser.add_argument(
        "--tls-ca",
        type=pem_flag("certificate"),
        help="PEM CA that signed every cluster member's certificate",
    )


def configure_from(args: argparse.Namespace) -> TlsFiles | None:
    """Read the TLS flags: all three or none."""
    given = [args.tls_cert, args.tls_key, args.tls_ca]
    if not any(given):
        return None
    if not all(given):
        raise SystemExit("--tls-cert, --tls-key and --tls-ca go together")
    check_key_pair(args.tls_cert, args.tls_key)
    return configure(TlsFiles.load(args.tls_cert, args.tls_key, args.tls_ca))


def check_key_pair(cert: str, key: str) -> None:
    """Whether ``key`` is the private key of ``cert``: gRPC finds out only
    when it binds the port, and said "address in use?" after C-core lines."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise SystemExit(
            f"--tls-key {key} is not the private key of --tls-cert {cert} ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise SystemExit(f"cannot read TLS file: {exc}") from None


def configure(files: TlsFiles | None) -> TlsFiles | None:
    global _cluster_tls
    _cluster_tls = files
    return files


def current() -> TlsFiles | None:
    return _cluster_tls


def aio_channel(address: str, options: list | None = None) -> grpc.aio.Channel:
    """A channel to another cluster member, mutual TLS when configured."""
    if _cluster_tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, _cluster_tls.channel_credentials(), options=options)


def sync_channel(address: str, options: list | None = None) -> grpc.Channel:
    if _cluster_tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, _cluster_tls.channel_credentials(), options=options)
