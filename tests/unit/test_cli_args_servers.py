"""Start-up flags of murmur-cluster, murmur-shard and murmur-router that used
to pass the parser and fail later: ports past 0-65535 (an OverflowError
traceback, or a shard child dying), the cluster's last shard port past
65535, a --data-dir that is a file, a --host that does not resolve (reported
as "port ... is taken"), and TLS files that are not PEM (found only at the
first handshake). Each is now a usage error naming the flag (exit 2)."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest

from deploy.dev_ca import write_dev_ca
from server import cluster
from tests.unit.server_programs import PROGRAMS, usage_error

# -- ports ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "flags", "message"),
    [
        ("murmur-cluster", ["--port", "70000"], "port 70000 is out of range; it must be 1-65535"),
        ("murmur-cluster", ["--port", "-5"], "port -5 is out of range; it must be 1-65535"),
        ("murmur-cluster", ["--port", "0"], "port 0 is out of range; it must be 1-65535"),
        (
            "murmur-cluster",
            ["--shards", "1", "--port", "65535"],
            "shard 0 would take port 65536; with --shards 1, --port must be 1-65534",
        ),
        (
            "murmur-cluster",
            ["--shards", "3", "--port", "65533"],
            "shard 2 would take port 65536; with --shards 3, --port must be 1-65532",
        ),
        (
            "murmur-cluster",
            ["--metrics-port", "70000"],
            "port 70000 is out of range; it must be 0-65535",
        ),
        (
            "murmur-cluster",
            ["--shards", "2", "--port", "100", "--metrics-port", "65535"],
            "shard 1 would take port 65537; with --shards 2, --metrics-port must be 0-65533",
        ),
        ("murmur-shard", ["--port", "70000"], "port 70000 is out of range; it must be 0-65535"),
        ("murmur-shard", ["--port", "-1"], "port -1 is out of range; it must be 0-65535"),
        (
            "murmur-shard",
            ["--metrics-port", "70000"],
            "port 70000 is out of range; it must be 0-65535",
        ),
        ("murmur-router", ["--port", "65536"], "port 65536 is out of range; it must be 0-65535"),
        ("murmur-router", ["--metrics-port", "-1"], "port -1 is out of range; it must be 0-65535"),
    ],
)
def test_a_port_out_of_range_is_a_usage_error_naming_the_flag_and_range(
    program: str, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error(program, flags, capsys)
    flag = "--metrics-port" if "--metrics-port" in flags else "--port"
    assert f"argument {flag}: {message}" in err


@pytest.mark.parametrize(
    ("program", "flags"),
    [
        ("murmur-shard", ["--port", "0", "--metrics-port", "0"]),
        ("murmur-router", ["--port", "0", "--metrics-port", "65535"]),
        ("murmur-cluster", ["--shards", "1", "--port", "65534", "--metrics-port", "65534"]),
        ("murmur-cluster", ["--shards", "64", "--port", "1", "--metrics-port", "0"]),
    ],
)
def test_ports_at_the_edges_of_their_range_are_taken(program: str, flags: list[str]) -> None:
    """0 is "pick a free port" for a server and for the cluster's metrics."""
    parse, required = PROGRAMS[program]
    args = parse([*required, *flags])
    assert args.port == int(flags[flags.index("--port") + 1])


def test_a_non_number_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert "argument --port: invalid port value: 'http'" in usage_error(
        "murmur-cluster", ["--port", "http"], capsys
    )


def test_the_port_check_says_out_of_range_rather_than_a_traceback() -> None:
    """check_ports_free used to let bind()'s OverflowError escape."""
    with pytest.raises(SystemExit, match="port 70000 is out of range"):
        cluster.check_ports_free("127.0.0.1", [70000])


# -- host -----------------------------------------------------------------------------


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_a_host_that_does_not_resolve_is_a_usage_error_not_a_taken_port(
    program: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The router and shard said "address in use?" after a C-core log line."""
    err = usage_error(program, ["--host", "256.1.1.1"], capsys)
    assert "argument --host: cannot resolve '256.1.1.1'" in err
    assert "taken" not in err


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        ("127.0.0.1:70000", "address '127.0.0.1:70000' must be host:port"),
        ("127.0.0.1:1,http://h:2", "address 'http://h:2' must be host:port"),
        ("a" * 300 + ":1", "the host in the address is 300 characters; the limit is 253"),
    ],
)
def test_a_shard_address_that_is_not_host_port_is_a_usage_error(
    shards: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A port past 65535 left the router silent for the whole --shard-wait."""
    parse, _ = PROGRAMS["murmur-router"]
    with pytest.raises(SystemExit) as exited:
        parse(["--shards", shards])
    assert exited.value.code == 2
    assert f"argument --shards: {message}" in capsys.readouterr().err
    assert parse(["--shards", "[::1]:50061,shard0.example:50061,"]).shards


def test_the_port_check_tells_a_bad_host_from_a_taken_port() -> None:
    with pytest.raises(SystemExit) as caught:
        cluster.check_ports_free("256.1.1.1", [23456])
    assert str(caught.value).startswith("cannot resolve --host 256.1.1.1 (")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(errno.EADDRINUSE, "Address already in use"), "port 80 on h is taken"),
        (
            OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"),
            "cannot listen on h:80 (Cannot assign requested address): check --host and --port",
        ),
        (OSError(errno.EACCES, "Permission denied"), "cannot listen on h:80 (Permission denied)"),
        (socket.gaierror(-2, "Name or service not known"), "cannot resolve --host h"),
    ],
)
def test_only_address_in_use_reads_as_a_taken_port(error: OSError, message: str) -> None:
    assert cluster.bind_failure("h", 80, error).startswith(message)


def test_a_bracketed_ipv6_host_is_probed_without_its_brackets() -> None:
    """``[::1]`` is the form gRPC needs in HOST:PORT; bind() wants ``::1``."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 here")
    assert cluster.parse_args(["--host", "[::1]"]).host == "[::1]"


# -- data folder ----------------------------------------------------------------------


def test_a_data_dir_that_is_a_file_is_a_usage_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "port"
    file.write_text("not a folder")
    err = usage_error("murmur-cluster", ["--data-dir", str(file)], capsys)
    assert f"argument --data-dir: {file} exists and is not a folder" in err


def test_a_data_dir_that_cannot_be_made_is_one_line_before_any_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below a file: parsing cannot tell, mkdir can (it used to raise)."""
    (tmp_path / "file").write_text("")
    below = tmp_path / "file" / "data"
    args = cluster.parse_args(["--shards", "1", "--data-dir", str(below)])
    monkeypatch.setattr(cluster, "check_ports_free", lambda host, ports: None)
    with pytest.raises(SystemExit) as caught:
        cluster.start_cluster(args, children := [])
    assert str(caught.value) == f"cannot use --data-dir {below}: Not a directory"
    assert children == []


# -- TLS files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_dev_ca(tmp_path_factory.mktemp("certs"), ["localhost", "127.0.0.1"])


def tls_args(cert: Path, key: Path, ca: Path) -> list[str]:
    return ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca)]


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_real_pem_files_are_taken(program: str, certs: dict[str, Path]) -> None:
    parse, required = PROGRAMS[program]
    args = parse([*required, *tls_args(certs["cert"], certs["key"], certs["ca"])])
    assert (args.tls_cert, args.tls_key, args.tls_ca) == tuple(
        str(certs[name]) for name in ("cert", "key", "ca")
    )


@pytest.mark.parametrize("program", list(PROGRAMS))
@pytest.mark.parametrize(
    ("flag", "swap", "message"),
    [
        ("--tls-cert", "key", "holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)"),
        ("--tls-ca", "junk", "holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)"),
        ("--tls-key", "cert", "holds no PEM private key (no -----BEGIN ... PRIVATE KEY-----"),
        ("--tls-key", "junk", "holds no PEM private key"),
    ],
)
def test_a_tls_file_that_is_not_the_pem_it_should_be_is_a_usage_error(
    program: str,
    flag: str,
    swap: str,
    message: str,
    certs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It used to pass and fail at the first handshake ("Failed to create
    security handshaker"), far from the flag that was wrong."""
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\ncut short")
    files = {"--tls-cert": certs["cert"], "--tls-key": certs["key"], "--tls-ca": certs["ca"]}
    files[flag] = junk if swap == "junk" else certs[swap]
    err = usage_error(
        program, tls_args(files["--tls-cert"], files["--tls-key"], files["--tls-ca"]), capsys
    )
    assert f"argument {flag}: {files[flag]} {message}" in err


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_a_tls_file_that_cannot_be_read_is_a_usage_error(
    program: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent.pem"
    err = usage_error(program, ["--tls-ca", str(missing)], capsys)
    assert f"argument --tls-ca: cannot read {missing}: No such file or directory" in err


# -- the operator token -----------------------------------------------------------------


@pytest.mark.parametrize("program", ["murmur-router", "murmur-cluster"])
@pytest.mark.parametrize("token", ["sécret", "tab\there", "ends\n", " padded"])
def test_an_operator_token_no_caller_could_send_is_a_usage_error(
    program: str, token: str, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """gRPC sends only printable ASCII in a header, and the check strips its
    ends: a router started with such a token could never be operated."""
    err = usage_error(program, ["--admin-token", token], capsys)
    assert "argument --admin-token: the operator token " in err and token not in err
    monkeypatch.setenv("MURMUR_ADMIN_TOKEN", token)  # the default comes from here
    assert "the operator token " in usage_error(program, [], capsys)


def test_a_key_that_is_not_the_certificates_is_one_line_naming_both(
    certs: dict[str, Path],
) -> None:
    """gRPC found out only when binding the port, and said "address in use?"."""
    from argparse import Namespace

    from murmur import tls

    wrong = Namespace(tls_cert=str(certs["cert"]), tls_key=str(certs["client_key"]), tls_ca="ca")
    with pytest.raises(SystemExit) as caught:
        tls.configure_from(wrong)
    assert str(caught.value).startswith(
        f"--tls-key {certs['client_key']} is not the private key of --tls-cert {certs['cert']} ("
    )
    right = Namespace(tls_cert=str(certs["cert"]), tls_key=str(certs["key"]), tls_ca=certs["ca"])
    try:
        assert tls.configure_from(right) is not None
    finally:
        tls.configure(None)


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_an_empty_host_is_a_usage_error(program: str, capsys: pytest.CaptureFixture[str]) -> None:
    """bind() takes "" as every address, so the probe passed; gRPC then
    refused "host must not be empty" as "address in use?"."""
    err = usage_error(program, ["--host", " "], capsys)
    assert "argument --host: it is empty; give an address of this machine" in err


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_a_bare_ipv6_host_is_bracketed_for_grpc(program: str) -> None:
    """gRPC read "::1:50061" as a misformatted name."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 here")
    parse, required = PROGRAMS[program]
    assert parse([*required, "--host", "::1"]).host == "[::1]"
