"""The batch runner's shortcut holds only for handlers that never await."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest

from shard.batch_execute import REQUEST_TYPES, RUN_INLINE
from shard.servicer import ShardServicer


@pytest.mark.parametrize("method", sorted(RUN_INLINE))
def test_inline_handlers_never_await(method: str) -> None:
    """A handler that awaited would hold the rest of its batch behind it."""
    handler = inspect.unwrap(getattr(ShardServicer, method))
    tree = ast.parse(textwrap.dedent(inspect.getsource(handler)))
    suspending = ast.Await | ast.AsyncFor | ast.AsyncWith
    awaits = [node for node in ast.walk(tree) if isinstance(node, suspending)]
    assert not awaits, f"ShardServicer.{method} awaits at line {awaits[0].lineno}"


def test_inline_handlers_are_batchable_methods() -> None:
    assert RUN_INLINE <= set(REQUEST_TYPES)
