"""Global options of ``murmur`` and ``murmur-admin`` that used to pass click
and fail inside gRPC: a --target port outside 1-65535 (gRPC wraps it to
another port), an operator token gRPC cannot send as a header (C-core log
lines and INTERNAL "Invalid metadata"), a --tls-ca file with no PEM
certificate (UNAVAILABLE "Failed to create security handshaker", as if the
server were down), and ``settings`` with a key given twice (the last won).
Each is now a usage error (exit 2) naming the option, made before any call:
the target is a port nothing listens on, so a call would exit 1 instead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from client.admin_cli import cli as admin_cli
from client.cli import SECRET_TEXT, TARGET, TLS_CA_PATH
from client.cli import cli as murmur_cli
from deploy.dev_ca import write_dev_ca

NOWHERE = "127.0.0.1:1"  # refuses connections: a call that is made fails fast, exit 1
CLIS: dict[str, tuple[click.Group, list[str]]] = {
    "murmur": (murmur_cli, ["ping"]),
    "murmur-admin": (admin_cli, ["status"]),
}


def invoke(program: str, options: list[str], env: dict[str, str] | None = None) -> Result:
    """``program`` with ``options`` before its cheapest command."""
    group, command = CLIS[program]
    token = ["--token", "t"] if program == "murmur-admin" else []
    return CliRunner().invoke(group, [*token, "--timeout", "2", *options, *command], env=env)


# -- --target -------------------------------------------------------------------------


@pytest.mark.parametrize("program", list(CLIS))
@pytest.mark.parametrize(
    "target", ["127.0.0.1:99999", "127.0.0.1:-1", "localhost:0", "[::1]:70000"]
)
def test_a_target_port_out_of_range_is_a_usage_error(program: str, target: str) -> None:
    """99999 used to dial 34463 and -1 dial 65535."""
    result = invoke(program, ["--target", target])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--target'" in result.stderr
    port = target.rsplit(":", 1)[1]
    assert f"port {port} in '{target}' is out of range; a port is 1-65535" in result.stderr


@pytest.mark.parametrize(
    "target",
    [
        "localhost",
        "localhost:65535",
        "127.0.0.1:1",
        "[::1]:50051",
        "dns:///localhost:50051",
        "dns://8.8.8.8/example.com:443",
        "unix:/tmp/murmur.sock",
        "unix:99999",
        "unix-abstract:murmur",
        "ipv4:127.0.0.1:50051,127.0.0.2:50051",
        "ipv6:[::1]:50051",
        "example.com:https",
    ],
)
def test_every_other_form_grpc_takes_is_left_to_grpc(target: str) -> None:
    assert TARGET.convert(target, None, None) == target


# -- operator token -------------------------------------------------------------------

SECRET = "s\u00e9cretXYZ"


@pytest.mark.parametrize(
    ("token", "what"),
    [
        (SECRET, "a non-ASCII character;"),
        ("secretXYZ\n", "a control character at its end;"),
        ("secr\x01etXYZ", "a control character;"),
        ("secretXYZ\x7f", "a control character at its end;"),
        ("secretXYZ\u00a0", "a non-ASCII character at its end;"),
    ],
)
@pytest.mark.parametrize("source", ["option", "env"])
def test_a_token_grpc_cannot_send_is_a_usage_error_that_does_not_echo_it(
    token: str, what: str, source: str
) -> None:
    args = ["--target", NOWHERE, "--timeout", "2", "status"]
    if source == "option":
        result = CliRunner().invoke(admin_cli, ["--token", token, *args])
    else:
        result = CliRunner().invoke(admin_cli, args, env={"MURMUR_ADMIN_TOKEN": token})
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--token'" in result.stderr
    assert f"the value holds {what} only printable ASCII (0x20-0x7E)" in result.stderr
    assert "XYZ" not in result.output and "Invalid metadata" not in result.output


def test_a_printable_ascii_token_is_taken() -> None:
    """Spaces and punctuation are fine in a header value."""
    token = "~ !\"#$%&'()*+,-./0123456789:;<=>?@AZ[\\]^_`az{|}"
    assert SECRET_TEXT.convert(token, None, None) == token


# -- --tls-ca ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_dev_ca(tmp_path_factory.mktemp("certs"), ["localhost", "127.0.0.1"])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD_CAS: dict[str, Callable[[Path, dict[str, Path]], Path]] = {
    "text": lambda tmp, certs: write(tmp / "port", "23456\n"),
    "empty": lambda tmp, certs: write(tmp / "empty.pem", ""),
    "cut short": lambda tmp, certs: write(tmp / "cut.pem", "-----BEGIN CERTIFICATE-----\nMIIB"),
    "a key": lambda tmp, certs: certs["key"],
}


@pytest.mark.parametrize("program", list(CLIS))
@pytest.mark.parametrize("kind", list(BAD_CAS))
def test_a_tls_ca_with_no_pem_certificate_is_a_usage_error_naming_it(
    program: str, kind: str, tmp_path: Path, certs: dict[str, Path]
) -> None:
    path = BAD_CAS[kind](tmp_path, certs)
    for env, options in (({}, ["--tls-ca", str(path)]), ({"MURMUR_TLS_CA": str(path)}, [])):
        result = invoke(program, ["--target", NOWHERE, *options], env=env)
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--tls-ca'" in result.stderr
        assert f"{path} holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)" in (
            result.stderr
        )


def test_a_real_ca_and_a_bundle_are_taken(certs: dict[str, Path], tmp_path: Path) -> None:
    bundle = write(tmp_path / "bundle.pem", certs["ca"].read_text() + certs["cert"].read_text())
    for path in (certs["ca"], bundle, certs["cert"]):
        assert TLS_CA_PATH.convert(str(path), None, None) == str(path)


@pytest.mark.parametrize("program", list(CLIS))
def test_a_real_ca_still_reaches_the_server(program: str, certs: dict[str, Path]) -> None:
    """Taken, and the call is made: it fails as a call (exit 1), not as usage."""
    result = invoke(program, ["--target", NOWHERE, "--tls-ca", str(certs["ca"])])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: UNAVAILABLE: ")


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        (
            ["inbox_cap=800", "inbox_cap=900"],
            "inbox_cap is given twice ('inbox_cap=800' and 'inbox_cap=900')",
        ),
        (
            ["inbox-cap=800", "backfill_limit=5", "inbox_cap=800"],
            "inbox_cap is given twice ('inbox-cap=800' and 'inbox_cap=800')",
        ),
    ],
)
def test_a_setting_given_twice_is_a_usage_error_naming_it(
    assignments: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        admin_cli, ["--target", NOWHERE, "--token", "t", "settings", *assignments]
    )
    assert result.exit_code == 2, result.output
    assert f"Invalid value for KEY=VALUE: {message}; give each setting once" in result.stderr


def test_distinct_settings_are_all_kept() -> None:
    from client.admin_cli import parse_settings

    assert parse_settings(["inbox_cap=800", "backfill-limit=5"]) == {
        "inbox_cap": 800,
        "backfill_limit": 5,
    }
    assert parse_settings([]) == {}
