"""``murmur``: a command line for the Murmur API, for people and for scripts.

People get aligned tables; scripts get ``--json`` (one JSON document per run,
protobuf's canonical JSON mapping, so 64-bit ids are strings). Users can be
named by handle or id: a value of only digits is an id, ``@123`` is the handle
"123", and a leading ``@`` is always dropped from a handle. Any failed RPC
prints ``error: CODE: details`` to stderr and exits 1, as does a local failure
(``error: message``); usage errors exit 2, and so does an argument that is not
valid UTF-8 (it could never be sent).
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, TypeVar

import click
import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from client.client import DEFAULT_TARGET, MAX_TIMEOUT_S, MurmurClient
from client.errors import MurmurError
from murmur import page_tokens, tls
from murmur.addresses import MAX_PORT
from murmur.header_values import header_problem
from murmur.ids import MAX_ID
from murmur.page_tokens import TokenKind
from murmur.v1 import murmur_pb2 as pb
from murmur.validation import MAX_PAGE_SIZE  # the server's cap: asking for more is pointless

_DIGITS = re.compile(r"[0-9]+")  # not str.isdigit(): that accepts "²" and other digits
_NEGATIVE = re.compile(r"-[0-9]+")
# HOST:PORT or [V6]:PORT with a plain (maybe negative) number for a port
_HOST_PORT = re.compile(r"(?:\[[^\]/]*\]|(?P<host>[^:/\[\]]+)):(?P<port>-?[0-9]+)")
# a host name or IPv4 address without a port, bare or as dns:///HOST
_NO_PORT = re.compile(r"(?:dns:///)?[A-Za-z0-9._-]+")
_TARGET_SCHEMES = frozenset({"dns", "unix", "unix-abstract", "ipv4", "ipv6", "vsock"})
_T = TypeVar("_T")


# -- argument types ----------------------------------------------------------


def _escaped(text: str) -> str:
    """``text`` printable whatever it holds: an undecodable byte that Python
    smuggled in as a lone surrogate (PEP 383) shows as ``\\xff``."""
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def utf8_problem(text: str) -> str | None:
    """Why ``text`` cannot be sent, or None. Arguments and environment values
    that are not valid UTF-8 reach Python as lone surrogates; protobuf and gRPC
    would only fail on them deep inside a call, with a UnicodeEncodeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        return f"is not valid UTF-8 ({what} at position {exc.start})"
    return None


class Utf8TextType(click.ParamType):
    """Any text that can be sent: valid UTF-8, else a usage error (exit 2) that
    names the argument. Every free-text argument and option of both CLIs uses
    it, so a bad byte never reaches protobuf. ``secret`` values (the operator
    token) are not echoed in the message."""

    name = "text"

    def __init__(self, secret: bool = False) -> None:
        self.secret = secret

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        problem = utf8_problem(value)
        if problem is not None and self.secret:
            self.fail("the value is not valid UTF-8", param, ctx)
        if problem is not None:
            self.fail(f"'{_escaped(value)}' {problem}", param, ctx)
        return value


class TokenType(Utf8TextType):
    """The operator token: valid UTF-8 and printable ASCII, since it travels
    as ``authorization: Bearer ...`` metadata; anything else is a usage error
    (exit 2) naming the option or variable, never the value."""

    def __init__(self) -> None:
        super().__init__(secret=True)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = super().convert(value, param, ctx)
        problem = header_problem(text) if isinstance(text, str) else None
        if problem is not None:
            self.fail(f"the value {problem}", param, ctx)
        return text


TEXT = Utf8TextType()
SECRET_TEXT = TokenType()


class TimeoutType(click.FloatRange):
    """Seconds: more than 0 and at most MAX_TIMEOUT_S. FloatRange alone lets
    NaN through (every comparison with it is false), and gRPC turns NaN, inf or
    1e10 into a deadline that has already passed."""

    name = "seconds"

    def __init__(self) -> None:
        super().__init__(min=0, max=MAX_TIMEOUT_S, min_open=True)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if math.isnan(seconds):
            self.fail("nan is not a number of seconds", param, ctx)
        return seconds


TIMEOUT = TimeoutType()


class TlsCaPathType(click.Path):
    """--tls-ca, read when parsed. A missing file, a directory, or a file with
    no PEM certificate in it is a usage error (exit 2) in both CLIs: gRPC
    would report the last only at the first call, as UNAVAILABLE "Failed to
    create security handshaker", as if the server were down. A file that
    exists but cannot be read is ``error: ...``, exit 1 (``tls_ca_failure``)."""

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False, readable=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise tls_ca_failure(path, exc) from exc
        problem = tls.pem_problem(data, "certificate")
        if problem is not None:
            self.fail(f"{click.format_filename(path)} {problem}", param, ctx)
        return path


TLS_CA_PATH = TlsCaPathType()


@dataclass(frozen=True)
class UserRef:
    """A user as typed on the command line: an id, or a handle still to look up."""

    user_id: int | None = None
    handle: str | None = None

    def __str__(self) -> str:
        return f"@{self.handle}" if self.handle is not None else f"user {self.user_id}"


class UserRefType(click.ParamType):
    """Parses HANDLE | ID | @HANDLE without touching the network (so usage errors exit 2)."""

    name = "user"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, UserRef):
            return value
        text = TEXT.convert(str(value), param, ctx)
        if _DIGITS.fullmatch(text):
            user_id = int(text)
            if user_id == 0:
                self.fail("0 is not a user id (ids start at 1)", param, ctx)
            if user_id > MAX_ID:
                self.fail(f"{text} is too large for a user id (1 to {MAX_ID})", param, ctx)
            return UserRef(user_id=user_id)
        if _NEGATIVE.fullmatch(text):
            self.fail(f"{text} is not a user id (ids are positive)", param, ctx)
        handle = _strip_at(text)
        if not handle:
            self.fail("a handle cannot be empty", param, ctx)
        return UserRef(handle=handle)


USER = UserRefType()


def target_port_problem(text: str) -> str | None:
    """Why the port of a plain HOST:PORT or [V6]:PORT target is unusable, or
    None. gRPC takes the port modulo 65536 (99999 dials 34463, -1 dials
    65535), so a typo could reach another server. Other forms (dns:///...,
    unix:..., ipv4:..., a host without a port, a named port) are left to gRPC."""
    match = _HOST_PORT.fullmatch(text)
    if match is None or (match["host"] or "").lower() in _TARGET_SCHEMES:
        return None
    if 1 <= int(match["port"]) <= MAX_PORT:
        return None
    return f"port {match['port']} in {text!r} is out of range; a port is 1-{MAX_PORT}"


class TargetType(click.ParamType):
    """A server address as gRPC takes it (HOST:PORT, dns:///HOST:PORT,
    unix:PATH): one that is empty, holds white space or names a port past
    1-65535 is a usage error here, not gRPC's resolver logging at the first
    call (or wrapping the port)."""

    name = "target"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = TEXT.convert(str(value), param, ctx)
        if not text:
            self.fail("the address is empty; give HOST:PORT", param, ctx)
        if text == ":":
            self.fail("':' names no host and no port; give HOST:PORT", param, ctx)
        if text.startswith(":"):
            self.fail(f"{text!r} names no host; give HOST:PORT (localhost{text}, say)", param, ctx)
        if any(c.isspace() for c in text):
            self.fail(f"{text!r} holds white space; give HOST:PORT", param, ctx)
        problem = target_port_problem(text)
        if problem is not None:
            self.fail(problem, param, ctx)
        return text


TARGET = TargetType()


class IdRange(click.IntRange):
    """An id in a range: click's own words for one that is no number at all
    ("'abc' is not a valid integer range") name a type, not the id wanted."""

    def __init__(self, what: str, low: int, high: int) -> None:
        super().__init__(min=low, max=high)
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, int):
            try:
                int(value)
            except (TypeError, ValueError):
                self.fail(
                    f"{value!r} is not {self.what} (a whole number {self.min} to {self.max})",
                    param,
                    ctx,
                )
        return super().convert(value, param, ctx)


ID = IdRange("a tweet id", 1, MAX_ID)


def _strip_at(handle: str) -> str:
    return handle[1:] if handle.startswith("@") else handle


# -- session: the client plus output settings ---------------------------------


class Session:
    """What every command needs: a lazily opened client and the output mode."""

    def __init__(
        self, target: str, timeout: float, as_json: bool, tls_ca: str | None = None
    ) -> None:
        self.target = target
        self.tls_ca = tls_ca
        self.timeout = timeout
        self.as_json = as_json
        self._client: MurmurClient | None = None
        self._ids: dict[str, int] = {}  # handle (lower case) -> id, so `follow a a` looks up once

    @property
    def client(self) -> MurmurClient:
        """Opened on first use; an unreadable --tls-ca file is reported like
        any other failure (``error: ...``, exit 1), naming the file."""
        if self._client is None:
            try:
                self._client = MurmurClient(self.target, timeout=self.timeout, tls_ca=self.tls_ca)
            except OSError as exc:
                raise tls_ca_failure(self.tls_ca, exc) from exc
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def resolve(self, ref: UserRef) -> int:
        """The user id for ``ref``; a handle costs one GetUser call."""
        if ref.user_id is not None:
            return ref.user_id
        handle = ref.handle or ""
        if handle.lower() not in self._ids:
            self._ids[handle.lower()] = self.client.get_user(handle=handle).user_id
        return self._ids[handle.lower()]

    def get_user(self, ref: UserRef) -> pb.User:
        if ref.user_id is not None:
            return self.client.get_user(user_id=ref.user_id)
        return self.client.get_user(handle=ref.handle)


class RpcFailed(click.ClickException):
    """A ``MurmurError`` dressed for click: ``error: CODE: details`` on stderr, exit 1."""

    exit_code = 1

    def __init__(self, error: MurmurError, hint: str = "") -> None:
        super().__init__(error.details)
        self.error = error
        self.hint = hint

    def format_message(self) -> str:
        return f"{self.error.code.name}: {self.error.details}{self.hint}"

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file, err=file is None)


def hint_for(error: MurmurError, target: str | None, tls_ca: str | None) -> str:
    """What gRPC's bare words usually mean here: an address that is not a
    router answers "Method not found"; a TLS server spoken to in plain text
    closes the socket."""
    details = error.details or ""
    if error.code == grpc.StatusCode.UNIMPLEMENTED and "Method not found" in details:
        return f" (is {target} a Murmur router? the server there does not serve this call)"
    if error.code == grpc.StatusCode.UNAVAILABLE and "Socket closed" in details and not tls_ca:
        return " (if the server speaks TLS, pass --tls-ca)"
    if error.code == grpc.StatusCode.UNAVAILABLE and target and _NO_PORT.fullmatch(target):
        return (
            f" ({target} names no port, so gRPC dialed 443; a router listens on 50051 by default)"
        )
    return ""


class LocalFailure(click.ClickException):
    """A failure with no gRPC status (a file that cannot be read, a stream that
    ended before its last message): ``error: message`` on stderr and exit 1, as
    RPC failures are reported."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file, err=file is None)


def tls_ca_failure(path: str | None, exc: OSError) -> LocalFailure:
    """The error for a --tls-ca file that exists but cannot be read (both CLIs)."""
    shown = click.format_filename(path or "")
    return LocalFailure(f"cannot read the --tls-ca file {shown}: {exc.strerror or exc}")


def unicode_failure(exc: UnicodeError) -> click.ClickException:
    """Backstop for text that slipped past ``Utf8TextType``: a lone surrogate
    can only come from the command line or the environment, so that is a usage
    error (exit 2); any other UnicodeError is a local failure (exit 1)."""
    if isinstance(exc, UnicodeEncodeError) and "surrogate" in exc.reason:
        return click.UsageError(
            "an argument or environment variable is not valid UTF-8 "
            f"(at position {exc.start} of '{_escaped(exc.object)}')"
        )
    return LocalFailure(f"text could not be encoded or decoded: {exc.reason}")


class MurmurGroup(click.Group):
    """Root group of both CLIs: turns any ``MurmurError`` raised by a subcommand
    into ``RpcFailed``, and a stray UnicodeError into a message, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as exc:
            if exc.option_name and _NEGATIVE.fullmatch(exc.option_name):
                raise click.UsageError(
                    f"{exc.option_name} is not an option, nor an id (no id is negative); "
                    "text that starts with '-' goes after --",
                    ctx=exc.ctx,
                ) from None
            raise
        except MurmurError as exc:
            params = ctx.params
            raise RpcFailed(exc, hint_for(exc, params.get("target"), params.get("tls_ca"))) from exc
        except UnicodeError as exc:
            raise unicode_failure(exc) from exc


pass_session = click.make_pass_decorator(Session)


# -- output -------------------------------------------------------------------


def _one_line(text: str) -> str:
    """Newlines and tabs as spaces, so one record stays on one table row."""
    return " ".join(text.splitlines()).replace("\t", " ")


def _width(text: str) -> int:
    """Terminal columns: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _iso(ts: Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: set[int]) -> str:
    """Columns padded to their widest cell; ``right`` holds numeric columns' indexes.

    The last column is never padded, so long texts do not grow trailing spaces.
    """
    cells = [list(headers)] + [[_one_line(str(c)) for c in row] for row in rows]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = []
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - _width(cell))
            if i == len(row) - 1 and i not in right:
                parts.append(cell)
            else:
                parts.append(pad + cell if i in right else cell + pad)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


USER_HEADERS = ("id", "handle", "name", "followers", "following", "tweets", "celebrity")
TWEET_HEADERS = ("id", "author", "created_at", "edited", "text")


def users_table(users: Iterable[pb.User]) -> str:
    rows = [
        (
            u.user_id,
            u.handle,
            u.display_name,
            u.follower_count,
            u.following_count,
            u.tweet_count,
            "yes" if u.celebrity else "no",
        )
        for u in users
    ]
    return render_table(USER_HEADERS, rows, right={0, 3, 4, 5})


def tweets_table(tweets: Iterable[pb.Tweet]) -> str:
    rows = [
        (
            t.tweet_id,
            t.user_id,
            _iso(t.created_at) if t.HasField("created_at") else "-",
            "yes" if t.HasField("edited_at") else "no",
            t.text,
        )
        for t in tweets
    ]
    return render_table(TWEET_HEADERS, rows, right={0, 1})


def to_dict(message: Message) -> dict[str, Any]:
    """Canonical proto3 JSON with field names as in the .proto, zero values included
    (a script should see ``"follower_count": "0"``, not a missing key)."""
    try:
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    except TypeError:  # protobuf < 5.26 spells it differently
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, including_default_value_fields=True
        )


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))


def first(items: Iterator[_T], limit: int) -> tuple[list[_T], bool]:
    """The first ``limit`` of ``items`` and whether there were more. The
    caller lets the iterator run to ``limit + 1``: one extra item says so
    for any server (routers before 2026-12 gave a full last page a token)."""
    taken = list(items)
    return taken[:limit], len(taken) > limit


def emit_users(session: Session, users: Sequence[pb.User], more: bool, what: str) -> None:
    """A user listing. When --limit cut it short (``more``), JSON gets
    ``"truncated": true`` (absent otherwise, like the timelines' ``"partial"``)
    and people a note on stderr, so the table stays clean."""
    note = f"more {what} exist; showing the first {len(users)} (raise --limit to see more)"
    emit_listing(session, "users", users, users_table(users), more, note)


def emit_listing(
    session: Session,
    key: str,
    items: Sequence[Message],
    table: str,
    more: bool,
    note: str,
    extra: dict[str, Any] | None = None,
    warnings: Sequence[str] = (),
) -> None:
    """A listing: in JSON, ``{key: [...]}`` plus ``extra`` keys and
    ``"truncated": true`` when --limit cut it short; for people, the table
    on stdout and the warnings and the note on stderr, so it stays clean."""
    if session.as_json:
        doc: dict[str, Any] = {key: [to_dict(item) for item in items], **(extra or {})}
        if more:
            doc["truncated"] = True
        emit_json(doc)
        return
    click.echo(table)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if more:
        click.echo(f"note: {note}", err=True)


def emit_user(session: Session, user: pb.User) -> None:
    if session.as_json:
        emit_json(to_dict(user))
    else:
        click.echo(users_table([user]))


def emit_tweet(session: Session, tweet: pb.Tweet) -> None:
    if session.as_json:
        emit_json(to_dict(tweet))
    else:
        click.echo(tweets_table([tweet]))


def emit_ok(session: Session, message: str) -> None:
    if session.as_json:
        emit_json({"ok": True})
    else:
        click.echo(message)


# -- commands -----------------------------------------------------------------


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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.option(
    "--timeout",
    type=TIMEOUT,
    default=10.0,
    show_default=True,
    metavar="S",
    help="Deadline per call, in seconds (retries included).",
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
def cli(ctx: click.Context, target: str, as_json: bool, timeout: float, tls_ca: str | None) -> None:
    """Talk to a Murmur router. USER is a handle, @handle, or numeric id."""
    session = Session(target, timeout, as_json, tls_ca)
    ctx.obj = session
    ctx.call_on_close(session.close)


@cli.group()
def user() -> None:
    """Create, change and show users."""


@user.command("create")
@click.argument("handle", type=TEXT)
@click.option(
    "--name", "display_name", type=TEXT, default="", help="Display name (at most 50 characters)."
)
@click.option("--bio", type=TEXT, default="", help="Bio (at most 160 characters).")
@pass_session
def user_create(session: Session, handle: str, display_name: str, bio: str) -> None:
    """Register HANDLE."""
    created = session.client.create_user(_strip_at(handle), display_name=display_name, bio=bio)
    emit_user(session, created)


@user.command("update")
@click.argument("who", metavar="HANDLE|ID", type=USER)
@click.option("--name", "display_name", type=TEXT, default=None, help="New display name.")
@click.option("--bio", type=TEXT, default=None, help="New bio.")
@pass_session
def user_update(session: Session, who: UserRef, display_name: str | None, bio: str | None) -> None:
    """Change WHO's display name and/or bio ("" clears one); handles never change."""
    if display_name is None and bio is None:
        raise click.UsageError("give --name or --bio (or both)")
    updated = session.client.update_user(session.resolve(who), display_name=display_name, bio=bio)
    emit_user(session, updated)


@user.command("show")
@click.argument("who", metavar="HANDLE|ID", type=USER)
@pass_session
def user_show(session: Session, who: UserRef) -> None:
    """Show one user."""
    emit_user(session, session.get_user(who))


@cli.command()
@click.argument("who", type=USER)
@click.argument("whom", type=USER)
@pass_session
def follow(session: Session, who: UserRef, whom: UserRef) -> None:
    """Make WHO follow WHOM."""
    session.client.follow(session.resolve(who), session.resolve(whom))
    emit_ok(session, f"{who} now follows {whom}")


@cli.command()
@click.argument("who", type=USER)
@click.argument("whom", type=USER)
@pass_session
def unfollow(session: Session, who: UserRef, whom: UserRef) -> None:
    """Make WHO stop following WHOM."""
    session.client.unfollow(session.resolve(who), session.resolve(whom))
    emit_ok(session, f"{who} no longer follows {whom}")


def _limit_option(help_text: str) -> Any:
    return click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=20,
        show_default=True,
        metavar="N",
        help=help_text,
    )


@cli.command()
@click.argument("who", metavar="USER", type=USER)
@_limit_option("Show at most N users (a note on stderr says if there are more).")
@pass_session
def followers(session: Session, who: UserRef, limit: int) -> None:
    """List USER's followers, in user-id order."""
    user_id = session.resolve(who)
    page_size = min(limit + 1, MAX_PAGE_SIZE)
    users, more = first(session.client.iter_followers(user_id, page_size, limit=limit + 1), limit)
    emit_users(session, users, more, what="followers")


@cli.command()
@click.argument("who", metavar="USER", type=USER)
@_limit_option("Show at most N users (a note on stderr says if there are more).")
@pass_session
def following(session: Session, who: UserRef, limit: int) -> None:
    """List the users USER follows, in user-id order."""
    user_id = session.resolve(who)
    page_size = min(limit + 1, MAX_PAGE_SIZE)
    users, more = first(session.client.iter_following(user_id, page_size, limit=limit + 1), limit)
    emit_users(session, users, more, what="followed users")


@cli.command()
@click.argument("who", metavar="USER", type=USER)
@click.argument("text", type=TEXT)
@click.option(
    "--request-id",
    type=TEXT,
    default="",
    metavar="R",
    help="Idempotency key: re-running with the same R does not post twice.",
)
@pass_session
def post(session: Session, who: UserRef, text: str, request_id: str) -> None:
    """Post TEXT as USER."""
    tweet = session.client.post_tweet(session.resolve(who), text, request_id=request_id)
    emit_tweet(session, tweet)


@cli.group()
def tweet() -> None:
    """Show, edit and delete tweets."""


@tweet.command("show")
@click.argument("tweet_id", metavar="ID", type=ID)
@pass_session
def tweet_show(session: Session, tweet_id: int) -> None:
    """Show one tweet."""
    emit_tweet(session, session.client.get_tweet(tweet_id))


@tweet.command("edit")
@click.argument("who", metavar="USER", type=USER)
@click.argument("tweet_id", metavar="ID", type=ID)
@click.argument("text", type=TEXT)
@pass_session
def tweet_edit(session: Session, who: UserRef, tweet_id: int, text: str) -> None:
    """Replace the text of USER's tweet ID."""
    emit_tweet(session, session.client.edit_tweet(tweet_id, session.resolve(who), text))


@tweet.command("delete")
@click.argument("who", metavar="USER", type=USER)
@click.argument("tweet_id", metavar="ID", type=ID)
@pass_session
def tweet_delete(session: Session, who: UserRef, tweet_id: int) -> None:
    """Delete USER's tweet ID."""
    session.client.delete_tweet(tweet_id, session.resolve(who))
    emit_ok(session, f"deleted tweet {tweet_id}")


def _before_option() -> Any:
    return click.option(
        "--before",
        type=ID,
        default=None,
        metavar="ID",
        help="Only tweets older than tweet ID.",
    )


def _emit_timeline(session: Session, tweets: list[pb.Tweet], missing: set[int], more: bool) -> None:
    """Tweets plus, if any page was partial, which shards did not answer, and
    whether --limit cut the list short (``more``): on stderr for people (the
    table stays clean), as extra keys in JSON (present only when true)."""
    extra: dict[str, Any] = {}
    warnings = []
    if missing:
        extra = {"partial": True, "unavailable_shards": sorted(missing)}
        shards = ", ".join(str(s) for s in sorted(missing))
        warnings.append(f"partial timeline: shards {shards} did not answer")
    note = (
        f"more tweets exist; showing the newest {len(tweets)} "
        f"(--before {tweets[-1].tweet_id} shows the next ones)"
        if more
        else ""
    )
    emit_listing(session, "tweets", tweets, tweets_table(tweets), more, note, extra, warnings)


def _timeline(session: Session, who: UserRef, limit: int, before: int | None, home: bool) -> None:
    user_id = session.resolve(who)
    kind = TokenKind.HOME_TIMELINE if home else TokenKind.USER_TIMELINE
    token = page_tokens.encode(kind, user_id, before) if before is not None else ""
    missing: set[int] = set()

    def note_partial(page: pb.TimelineResponse) -> None:
        missing.update(page.unavailable_shards)

    iterate = session.client.iter_home_timeline if home else session.client.iter_user_timeline
    tweets = iterate(
        user_id,
        page_size=min(limit + 1, MAX_PAGE_SIZE),
        limit=limit + 1,
        page_token=token,
        on_partial=note_partial,
    )
    shown, more = first(tweets, limit)
    _emit_timeline(session, shown, missing, more)


@cli.command()
@click.argument("who", metavar="USER", type=USER)
@_limit_option("Show at most N tweets (a note on stderr says if there are more).")
@_before_option()
@pass_session
def timeline(session: Session, who: UserRef, limit: int, before: int | None) -> None:
    """USER's own tweets, newest first."""
    _timeline(session, who, limit, before, home=False)


@cli.command()
@click.argument("who", metavar="USER", type=USER)
@_limit_option("Show at most N tweets (a note on stderr says if there are more).")
@_before_option()
@pass_session
def home(session: Session, who: UserRef, limit: int, before: int | None) -> None:
    """USER's home timeline (own tweets and followees'), newest first."""
    _timeline(session, who, limit, before, home=True)


@cli.command()
@pass_session
def ping(session: Session) -> None:
    """Round-trip to a shard through the router."""
    started = time.perf_counter()
    answer = session.client.ping()
    elapsed_ms = (time.perf_counter() - started) * 1000
    if session.as_json:
        emit_json(to_dict(answer))
    else:
        click.echo(f"pong from shard {answer.shard_id} in {elapsed_ms:.1f} ms")


def main() -> None:
    """Console-script entry point (``murmur``); exits with the command's status."""
    cli(prog_name="murmur")


if __name__ == "__main__":
    main()
