"""``murmur-admin``: the operator command line for ``murmur.v1.Admin``.

Same conventions as ``murmur``: aligned tables for people, ``--json`` for
scripts (one JSON document per run, protobuf's canonical JSON mapping with the
.proto field names), ``error: CODE: details`` on stderr and exit 1 when an RPC
fails (``error: message`` for a local failure, such as a backup stream that
ended without reporting done), exit 2 for usage errors, including an argument
that is not valid UTF-8, a --target port outside 1-65535, a --tls-ca file that
does not exist or holds no PEM certificate, a token that is not printable
ASCII (it could never be sent) and a settings key given twice. Long
operations (move-slots, rebalance, drain, backup) draw a progress bar on stderr
when stderr is a terminal (the group options ``murmur-admin --progress ...``
force it, ``--no-progress`` hides it).

The operator token comes from ``--token`` or MURMUR_ADMIN_TOKEN and is only
ever sent as ``authorization: Bearer ...`` metadata; it is never printed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import click
from tqdm import tqdm

from client.admin_client import AdminClient
from client.cli import (
    SECRET_TEXT,
    TARGET,
    TEXT,
    TIMEOUT,
    TLS_CA_PATH,
    IdRange,
    LocalFailure,
    MurmurGroup,
    Utf8TextType,
    emit_json,
    render_table,
    tls_ca_failure,
    to_dict,
)
from client.client import DEFAULT_TARGET
from murmur.addresses import address_problem
from murmur.backup_paths import backup_path_problem
from murmur.errors import WRITES_REFUSED_HEALTH
from murmur.setting_limits import LIMITS, check_value
from murmur.v1 import admin_pb2 as apb
from murmur.v1 import shard_pb2 as spb

SLOT_COUNT = 4096
CHECK_FOUND_PROBLEMS = 1  # `check` without --repair, like a failed call: scripts notice
MAX_UINT32 = (1 << 32) - 1
SHARD_ID = IdRange("a shard id", 0, MAX_UINT32)
MB = 1024 * 1024
TABLE_RANGES = 4  # slot ranges shown per shard in the status table before "…"
UNSAFE_NO_FSYNC = (
    "UNSAFE: acknowledges writes without an fsync (--unsafe-no-fsync); "
    "a power cut can lose acknowledged writes"
)

_RANGE_PART = re.compile(r"([0-9]+)(?:-([0-9]+))?")


# -- argument types ------------------------------------------------------------


def parse_slot_ranges(text: str) -> list[int]:
    """``"0-63,100,200-210"`` -> sorted distinct slots; ValueError says what is wrong."""
    slots: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            raise ValueError(f"empty range in {text!r}")
        match = _RANGE_PART.fullmatch(part)
        if not match:
            raise ValueError(f"{part!r} is not a slot or a range like 0-63")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        if end < start:
            raise ValueError(f"range {part!r} ends before it starts")
        if end >= SLOT_COUNT:
            raise ValueError(f"slot {end} is out of range; slots are 0-{SLOT_COUNT - 1}")
        slots.update(range(start, end + 1))
    return sorted(slots)


class SlotRangeType(click.ParamType):
    """RANGE: slots and inclusive ranges separated by commas, e.g. ``0-63,100,200-210``."""

    name = "range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        try:
            return parse_slot_ranges(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SLOT_RANGE = SlotRangeType()


class ShardAddressType(Utf8TextType):
    """add-shard's HOST:PORT, checked here as the router checks it: a usage
    error (exit 2) rather than a call that comes back INVALID_ARGUMENT."""

    name = "host:port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        value = super().convert(value, param, ctx)
        problem = address_problem(value.strip())
        if problem is not None:
            self.fail(problem, param, ctx)
        return value


class BackupPathType(Utf8TextType):
    """backup's PATH: absolute (it names a folder on the shard's host, not
    here) and without NUL, checked before the call as the shard would."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        value = super().convert(value, param, ctx)
        problem = backup_path_problem(value)
        if problem is not None:
            self.fail(problem, param, ctx)
        return value


def parse_setting(text: str) -> tuple[str, int]:
    """``KEY=VALUE`` with a known key and a non-negative integer value."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="KEY=VALUE")
    if key not in LIMITS:
        known = ", ".join(LIMITS)
        raise click.BadParameter(
            f"unknown setting {key!r}; known settings: {known}", param_hint="KEY=VALUE"
        )
    value = value.strip()
    if not re.fullmatch(r"[0-9]+", value):
        raise click.BadParameter(
            f"{key} must be a non-negative integer, not {value!r}", param_hint="KEY=VALUE"
        )
    number = int(value)
    try:
        check_value(key, number)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KEY=VALUE") from None
    return key, number


def parse_settings(assignments: Iterable[str]) -> dict[str, int]:
    """Every ``KEY=VALUE``, each key once: a repeated key (``inbox_cap=800
    inbox_cap=900``, or ``inbox-cap`` and ``inbox_cap``) used to apply the
    last silently, which is rarely what was meant."""
    changes: dict[str, int] = {}
    given: dict[str, str] = {}
    for text in assignments:
        key, number = parse_setting(text)
        if key in changes:
            raise click.BadParameter(
                f"{key} is given twice ({given[key]!r} and {text!r}); give each setting once",
                param_hint="KEY=VALUE",
            )
        changes[key], given[key] = number, text
    return changes


# -- session -------------------------------------------------------------------


class AdminSession:
    """A lazily opened ``AdminClient`` plus the output settings."""

    def __init__(
        self,
        target: str,
        token: str | None,
        timeout: float,
        as_json: bool,
        progress: bool | None,
        tls_ca: str | None = None,
    ) -> None:
        self.target = target
        self.tls_ca = tls_ca
        self._token = token
        self.timeout = timeout
        self.as_json = as_json
        self.progress = progress
        self._client: AdminClient | None = None

    def __repr__(self) -> str:  # never show the token
        return f"AdminSession(target={self.target!r})"

    @property
    def client(self) -> AdminClient:
        """Opened on first use; an unreadable --tls-ca file is ``error: ...``,
        exit 1, naming the file, exactly as in ``murmur``."""
        if self._client is None:
            if not self._token:
                raise click.UsageError("no operator token: pass --token or set MURMUR_ADMIN_TOKEN")
            try:
                self._client = AdminClient(
                    self.target, self._token, timeout=self.timeout, tls_ca=self.tls_ca
                )
            except OSError as exc:
                raise tls_ca_failure(self.tls_ca, exc) from exc
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def show_progress(self) -> bool:
        if self.progress is not None:
            return self.progress
        return sys.stderr.isatty()


pass_session = click.make_pass_decorator(AdminSession)


# -- output helpers --------------------------------------------------------------


def format_ranges(ranges: Iterable[spb.SlotRange], limit: int | None = None) -> str:
    """``0-1023,2048-2100,3000``; with ``limit``, the first ``limit`` ranges and a count."""
    parts = [f"{r.start}" if r.start == r.end else f"{r.start}-{r.end}" for r in ranges]
    if not parts:
        return "-"
    if limit is not None and len(parts) > limit:
        return ",".join(parts[:limit]) + f",… ({len(parts)} ranges)"
    return ",".join(parts)


def _mb(value: int) -> str:
    return f"{value / MB:.1f}"


COUNTED_TABLES = ("users", "tweets", "inbox", "outbox")
STATUS_HEADERS = (
    "shard",
    "address",
    "slots",
    "count",
    "health",
    "users",
    "tweets",
    "inbox",
    "outbox",
    "disk_MB",
)


def answered(s: apb.ShardStatus) -> bool:
    """Whether the shard answered (its counts are real), writes refused or not."""
    return s.health == "SERVING" or s.health.startswith(WRITES_REFUSED_HEALTH)


def health_cell(health: str) -> str:
    """``health`` as a table shows it: the state, without the reason (a
    gRPC error's full text widened every row's cell to ~200 columns); the
    reasons follow the table."""
    if health.startswith(WRITES_REFUSED_HEALTH):
        return WRITES_REFUSED_HEALTH
    return health.split(":", 1)[0]


def _status_row(s: apb.ShardStatus) -> tuple[Any, ...]:
    """A shard that did not answer has no counts: ``-`` rather than a misleading 0."""
    if answered(s):
        counts: list[Any] = [s.key_counts.get(name, 0) for name in COUNTED_TABLES]
        disk = _mb(s.disk_bytes)
    else:
        counts, disk = ["-"] * len(COUNTED_TABLES), "-"
    slots = format_ranges(s.slots, TABLE_RANGES)
    return (s.shard_id, s.address, slots, s.slot_count, health_cell(s.health), *counts, disk)


def status_table(shards: Sequence[apb.ShardStatus]) -> str:
    rows = [_status_row(s) for s in shards]
    return render_table(STATUS_HEADERS, rows, right={0, 3, 5, 6, 7, 8, 9})


def kv_table(pairs: Iterable[tuple[str, Any]]) -> str:
    return render_table(("name", "value"), list(pairs), right={1})


def _progress_bar(session: AdminSession, desc: str, unit: str) -> tqdm:
    return tqdm(
        total=None,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not session.show_progress(),
        dynamic_ncols=True,
        leave=True,
    )


def follow_moves(
    session: AdminSession, desc: str, stream: Iterator[apb.MoveProgress]
) -> list[apb.MoveProgress]:
    """Drain a MoveProgress stream, drawing slots done / total on stderr."""
    seen: list[apb.MoveProgress] = []
    bar = _progress_bar(session, desc, "slot")
    try:
        for progress in stream:
            seen.append(progress)
            if progress.slots_total and bar.total != progress.slots_total:
                bar.total = progress.slots_total
            bar.n = progress.slots_done
            bar.set_postfix_str(f"{progress.keys_copied} keys; {progress.step}", refresh=False)
            bar.refresh()
    finally:
        bar.close()
    return seen


def _moved_nothing(last: apb.MoveProgress) -> bool:
    """True when the router reports that every slot was already in place."""
    return last.slots_in_place == last.slots_total


def emit_moves(session: AdminSession, seen: list[apb.MoveProgress], dry_run: bool = False) -> None:
    """Text: the last step and a "moved N of M" line, or each step of a plan,
    or only the router's own line when nothing had to move (a "moved 4 of 4"
    after it would claim work that was not done)."""
    if session.as_json:
        emit_json({"progress": [to_dict(p) for p in seen]})
        return
    if not seen:
        click.echo("nothing to move")
        return
    last = seen[-1]
    if dry_run or not last.slots_total or _moved_nothing(last):
        for progress in seen:
            click.echo(progress.step)
        return
    # every chunk's hand-over, not only the last one's: alone, "slots 100 now
    # on shard 1" read as if only slot 100 had moved
    for step in [p.step for p in seen if " now on shard " in p.step] or [last.step]:
        click.echo(step)
    moved = last.slots_done - last.slots_in_place
    already = f" ({last.slots_in_place} already there)" if last.slots_in_place else ""
    click.echo(
        f"moved {moved} of {last.slots_total} slots{already}; map version {last.map_version}"
    )


def report_problems(report: apb.ConsistencyReport) -> int:
    """What a repair would mend (stale outbox records drain by themselves)."""
    return report.one_sided_edges + report.wrong_counters + report.ghost_inbox_copies


def emit_report(session: AdminSession, report: apb.ConsistencyReport, repair: bool) -> None:
    if session.as_json:
        emit_json(to_dict(report))
        return
    pairs = [
        ("one_sided_edges", report.one_sided_edges),
        ("wrong_counters", report.wrong_counters),
        ("stale_outbox_records", report.stale_outbox_records),
        ("ghost_inbox_copies", report.ghost_inbox_copies),
    ]
    if repair:
        pairs.append(("repaired", report.repaired))
    click.echo(kv_table(pairs))
    if report.findings:
        click.echo("findings:")
        for line in report.findings:
            click.echo(f"  {line}")
    problems = report_problems(report)
    if not problems:
        click.echo("consistent")
    elif repair:
        click.echo(f"{problems} problems found, {report.repaired} repairs made")
    else:
        click.echo(f"{problems} problems found; `murmur-admin check --repair` fixes them")


# -- commands ------------------------------------------------------------------------


@click.group(cls=MurmurGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--target",
    envvar="MURMUR_TARGET",
    show_envvar=True,
    default=DEFAULT_TARGET,
    show_default=True,
    metavar="HOST:PORT",
    type=TARGET,
    help="Router address.",
)
@click.option(
    "--token",
    envvar="MURMUR_ADMIN_TOKEN",
    show_envvar=True,
    default=None,
    metavar="TOKEN",
    type=SECRET_TEXT,
    help="Operator token (prefer the environment variable: command lines are visible "
    "to other users).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.option(
    "--timeout",
    type=TIMEOUT,
    default=30.0,
    show_default=True,
    metavar="S",
    help="Deadline of quick calls, in seconds (moves, backups, checks and compaction get an hour).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars on stderr (default: when stderr is a terminal).",
)
@click.option(
    "--tls-ca",
    envvar="MURMUR_TLS_CA",
    show_envvar=True,
    default=None,
    metavar="PEM",
    type=TLS_CA_PATH,
    help="Use TLS, trusting this CA certificate file.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    target: str,
    token: str | None,
    as_json: bool,
    timeout: float,
    progress: bool | None,
    tls_ca: str | None,
) -> None:
    """Operate a Murmur cluster through a router's Admin API.

    RANGE is slots and inclusive ranges separated by commas, e.g. 0-63,100,200-210.
    """
    session = AdminSession(target, token, timeout, as_json, progress, tls_ca)
    ctx.obj = session
    ctx.call_on_close(session.close)


@cli.command()
@pass_session
def status(session: AdminSession) -> None:
    """Every shard: address, slots, health, key counts, disk use."""
    reply = session.client.get_cluster_status()
    if session.as_json:
        emit_json(to_dict(reply))
        return
    owned = sum(s.slot_count for s in reply.shards)
    click.echo(f"map version {reply.map_version}; {len(reply.shards)} shards; {owned} slots owned")
    click.echo(status_table(reply.shards))
    for s in reply.shards:
        if s.health != health_cell(s.health):
            click.echo(f"shard {s.shard_id}: {s.health}")
    for s in reply.shards:
        if s.unsafe_no_fsync:
            click.echo(f"shard {s.shard_id}: {UNSAFE_NO_FSYNC}")


def _parked(parked_ops: Any) -> str:
    """``parked_ops`` as "for shard 2: 1,204" (or "none")."""
    waiting = [f"for shard {d}: {n:,}" for d, n in sorted(parked_ops.items()) if n]
    return "; ".join(waiting) or "none"


@cli.command("shard-stats")
@click.argument("shard_id", metavar="ID", type=SHARD_ID)
@click.option("--leveldb", is_flag=True, help="Also print LevelDB's own statistics.")
@pass_session
def shard_stats(session: AdminSession, shard_id: int, leveldb: bool) -> None:
    """One shard's status, fan-out backlog and lag, group-commit counters.

    A shard that did not answer has none of them: they show as ``-`` (not
    a 0 that reads as "nothing queued" before a remove-shard), a line on
    stderr says so and the exit code is 1, with --json too. A shard that
    answers but refuses writes shows them, with that line and exit code."""
    stats = session.client.get_shard_stats(shard_id)
    s = stats.status
    if session.as_json:
        emit_json(to_dict(stats))
    else:
        click.echo(kv_table(_stats_pairs(stats, answered(s))))
        if leveldb and stats.leveldb_stats:
            click.echo("")
            click.echo(stats.leveldb_stats.rstrip())
    if not answered(s):
        click.echo(f"error: shard {s.shard_id} did not answer: {s.health}", err=True)
        sys.exit(1)
    if s.health != "SERVING":
        click.echo(f"error: shard {s.shard_id} is {s.health}", err=True)
        sys.exit(1)


def _stats_pairs(stats: apb.ShardStats, answered: bool) -> list[tuple[str, Any]]:
    s = stats.status
    shown: list[tuple[str, Any]] = [
        ("disk_MB", _mb(s.disk_bytes)),
        ("outbox_backlog", stats.outbox_backlog),
        ("oldest_outbox_ms", stats.oldest_outbox_ms),
        ("parked_ops", _parked(stats.parked_ops)),
        ("delivery_lag_p50_ms", f"{stats.delivery_lag_p50_ms:.1f}"),
        ("delivery_lag_p99_ms", f"{stats.delivery_lag_p99_ms:.1f}"),
        ("inbox_entries_delivered", stats.inbox_entries_delivered),
        ("fsyncs", stats.fsyncs),
        ("synced_writes", stats.synced_writes),
        ("fsync", "OFF (--unsafe-no-fsync)" if s.unsafe_no_fsync else "on"),
    ]
    if not answered:
        shown = [(name, "-") for name, _ in shown]
    return [
        ("shard", s.shard_id),
        ("address", s.address),
        ("health", health_cell(s.health)),
        ("slots", format_ranges(s.slots)),
        ("slot_count", s.slot_count),
        *shown,
        *((f"keys.{name}", s.key_counts[name]) for name in sorted(s.key_counts)),
    ]


@cli.command("add-shard")
@click.argument("address", metavar="HOST:PORT", type=ShardAddressType())
@pass_session
def add_shard(session: AdminSession, address: str) -> None:
    """Join a running, empty murmur-shard to the cluster (it owns no slots yet)."""
    reply = session.client.add_shard(address)
    if session.as_json:
        emit_json(to_dict(reply))
    else:
        joined = "was already in the cluster" if reply.already_member else "joined"
        click.echo(f"shard {reply.shard_id} at {address} {joined}; map version {reply.map_version}")


@cli.command("remove-shard")
@click.argument("shard_id", metavar="ID", type=SHARD_ID)
@pass_session
def remove_shard(session: AdminSession, shard_id: int) -> None:
    """Forget a shard that owns no slots (drain it first)."""
    reply = session.client.remove_shard(shard_id)
    if session.as_json:
        emit_json(to_dict(reply))
    else:
        click.echo(f"shard {shard_id} removed; map version {reply.map_version}")


@cli.command("move-slots")
@click.argument("slots", metavar="RANGE", type=SLOT_RANGE)
@click.option(
    "--to",
    "target_shard",
    required=True,
    type=SHARD_ID,
    metavar="ID",
    help="Shard to move the slots to.",
)
@pass_session
def move_slots(session: AdminSession, slots: list[int], target_shard: int) -> None:
    """Move the slots in RANGE to shard ID, online."""
    stream = session.client.move_slots(slots, target_shard)
    emit_moves(session, follow_moves(session, f"move to shard {target_shard}", stream))


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only print the planned moves.")
@pass_session
def rebalance(session: AdminSession, dry_run: bool) -> None:
    """Even out slot counts across the shards."""
    stream = session.client.rebalance(dry_run=dry_run)
    emit_moves(session, follow_moves(session, "rebalance", stream), dry_run=dry_run)


@cli.command()
@click.argument("shard_id", metavar="ID", type=SHARD_ID)
@pass_session
def drain(session: AdminSession, shard_id: int) -> None:
    """Move every slot off shard ID, spreading them over the others."""
    stream = session.client.drain_shard(shard_id)
    emit_moves(session, follow_moves(session, f"drain shard {shard_id}", stream))


@cli.command()
@click.argument("shard_id", metavar="ID", type=SHARD_ID)
@pass_session
def compact(session: AdminSession, shard_id: int) -> None:
    """Compact shard ID's LevelDB."""
    reply = session.client.compact_shard(shard_id)
    if session.as_json:
        emit_json(to_dict(reply))
    else:
        click.echo(
            f"compacted shard {shard_id}: {_mb(reply.disk_bytes_before)} MB -> "
            f"{_mb(reply.disk_bytes_after)} MB"
        )


@cli.command()
@click.argument("shard_id", metavar="ID", type=SHARD_ID)
@click.argument("path", type=BackupPathType())
@pass_session
def backup(session: AdminSession, shard_id: int, path: str) -> None:
    """Snapshot shard ID into PATH: an absolute folder on the shard's host that
    does not exist yet. Restore by starting murmur-shard on it with the same --shard-id."""
    stream = session.client.backup_shard(shard_id, path)
    seen: list[apb.BackupProgress] = []
    bar = _progress_bar(session, f"backup shard {shard_id}", "key")
    try:
        for progress in stream:
            seen.append(progress)
            if progress.done:
                bar.total = progress.keys_total or progress.keys_copied
            bar.n = progress.keys_copied
            bar.refresh()
    finally:
        bar.close()
    last = seen[-1] if seen else apb.BackupProgress()
    if not last.done:  # the stream closed with OK but never said done: not a backup
        raise LocalFailure(
            f"backup of shard {shard_id} ended without finishing "
            f"({last.keys_copied} keys copied); do not rely on {path}"
        )
    if session.as_json:
        emit_json(to_dict(last))
    else:
        click.echo(f"backed up shard {shard_id}: {last.keys_copied} keys in {last.path}")


@cli.command()
@click.argument("assignments", metavar="[KEY=VALUE]...", nargs=-1, type=TEXT)
@pass_session
def settings(session: AdminSession, assignments: tuple[str, ...]) -> None:
    """Show the cluster-wide settings, or change some on every shard.

    Keys: celebrity_threshold, inbox_cap, backfill_limit, post_rate_limit,
    follow_rate_limit (the rate limits per user per minute; 0 = no limit).
    """
    changes = parse_settings(assignments)
    if changes:
        reply = session.client.update_settings(**changes)
    else:
        reply = session.client.get_settings()
    if session.as_json:
        emit_json(to_dict(reply))
        return
    click.echo(kv_table((name, getattr(reply, name)) for name in LIMITS))
    if reply.disagreeing_shards:
        shards = shards_named(reply.disagreeing_shards)
        other = (
            "has other settings" if len(reply.disagreeing_shards) == 1 else "have other settings"
        )
        click.echo(f"warning: {shards} {other}; repeat the update to align them", err=True)
    if reply.unreachable_shards:
        click.echo(f"warning: {shards_named(reply.unreachable_shards)} did not answer", err=True)


def shards_named(ids: Iterable[int]) -> str:
    """ "shard 7" or "shards 1, 2"."""
    listed = [str(i) for i in ids]
    return f"shard {listed[0]}" if len(listed) == 1 else f"shards {', '.join(listed)}"


@cli.command()
@click.option("--repair", is_flag=True, help="Fix what the check finds.")
@click.option(
    "--slots",
    type=SLOT_RANGE,
    default=None,
    metavar="RANGE",
    help="Only these slots (default: all).",
)
@pass_session
def check(session: AdminSession, repair: bool, slots: list[int] | None) -> None:
    """Find one-sided follow edges, wrong counters, stale outbox records, and
    inbox copies of tweets that no longer exist (left by a restore)."""
    chosen = slots or []
    if repair:
        report = session.client.repair(chosen)
    else:
        report = session.client.check_consistency(chosen)
    emit_report(session, report, repair)
    if not repair and report_problems(report):
        sys.exit(CHECK_FOUND_PROBLEMS)


def main() -> None:
    """Console-script entry point (``murmur-admin``)."""
    cli(prog_name="murmur-admin")


if __name__ == "__main__":
    main()
