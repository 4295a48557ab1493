"""What a backup's PATH must be, checked by the shard that writes it and,
before any call, by ``murmur-admin backup`` (a usage error, exit 2).

The path names a folder on the shard's host, not on the operator's machine,
so only what holds anywhere is checked here: the shard checks the rest
(whether it exists, its parent, where it sits) against its own disk."""

from __future__ import annotations

import os


def backup_path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a backup folder, or None."""
    if "\x00" in path:
        return f"path {path!r} contains a NUL"
    if not path or not os.path.isabs(path):
        return f"path {path!r} must be an absolute path (on the shard's host)"
    return None
