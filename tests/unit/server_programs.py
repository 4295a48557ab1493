"""The three server programs' argument parsers, for tests of their flags."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from server import cluster
from server import main as router
from shard import main as shard

# program -> (its parse_args, the flags it requires)
PROGRAMS: dict[str, tuple[Callable, list[str]]] = {
    "murmur-shard": (shard.parse_args, ["--data-dir", "x"]),
    "murmur-router": (router.parse_args, ["--shards", "127.0.0.1:1"]),
    "murmur-cluster": (cluster.parse_args, []),
}


def usage_error(program: str, flags: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The stderr of a parse that must end in a usage error (exit 2), not a traceback."""
    parse, required = PROGRAMS[program]
    with pytest.raises(SystemExit) as exited:
        parse([*required, *flags])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err
