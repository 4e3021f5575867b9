"""Registration intents: the provisioner's fast path into the builder set.

A provisioner that has just started a builder appends to the stream
``{xds}:intents`` (any Redis client: ``XADD '{xds}:intents' '*' op register id
ID address ADDR app APP region REGION [port P] [request R]``, or ``op
deregister id ID``). The leader reads the stream on a connection of its own
(``IntentReader``: XREAD BLOCK after the cursor kept in Redis), checks each
entry with the validator DNS records go through (``parse_intent``), and the
poll loop applies the batch in its next fenced write together with whatever
the last DNS answer says (``discoverer.plan.Planner``). The cursor and each
intent's outcome (``{xds}:outcome:<request>``) are written by that same script
call, so an intent is applied exactly once across leader failovers.

Only the leader reads intents; a standby never does.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, replace

from shared import supervise
from shared.connect import bounded
from shared.errors import RecordError, StoreMisuse, StoreUnavailable
from shared.logs import LogOnce
from shared.model import ID_RE, SOURCE_INTENT, Builder
from shared.store import IntentEntry, Store, stream_id

from . import metrics
from .rules import Rules
from .validate import validate

log = logging.getLogger(__name__)

REGISTER, DEREGISTER = "register", "deregister"  # Intent.op
OPS = (REGISTER, DEREGISTER)
FIELDS = ("op", "id", "address", "app", "region", "port", "request")
MAX_VALUE = 256  # bytes per field value; anything longer is rejected whole
REQUEST_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
OUTCOME_TTL = 600  # seconds an outcome can be read


@dataclass(frozen=True, slots=True)
class Intent:
    """One entry of the intents stream, checked (``parse_intent``). ``error`` set: rejected, with why."""

    entry_id: str
    request: str  # where its outcome goes: the caller's ``request``, else the entry id
    op: str = ""
    id: str = ""
    builder: Builder | None = None  # register: the validated record (source "intent")
    error: RecordError | None = None


def parse_intent(entry: IntentEntry, rules: Rules, wall: float) -> Intent:
    """Check one entry; never raises (a bad entry becomes an Intent with ``error``)."""
    fields, request = {}, entry.entry_id
    try:
        fields = _fields(entry.fields)
        if "request" in fields:
            if not REQUEST_RE.match(fields["request"]):
                raise RecordError("bad_request", "request must be 1-128 of A-Z a-z 0-9 . _ : -")
            request = fields["request"]
        op, bid = _require(fields, "op"), _require(fields, "id")
        if op not in OPS:
            raise RecordError("unknown_op", f"{op[:40]!r}: expected register or deregister")
        if op == DEREGISTER:
            return Intent(entry.entry_id, request, op, _checked_id(bid))
        return Intent(entry.entry_id, request, op, bid, builder=_builder(fields, rules, wall))
    except RecordError as err:
        return Intent(entry.entry_id, request, fields.get("op", ""), fields.get("id", "")[:64], error=err)


def _fields(raw: dict) -> dict[str, str]:
    out = {}
    for key, value in raw.items():
        try:
            name = key.decode() if isinstance(key, bytes) else str(key)
            text = value.decode() if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError as exc:
            raise RecordError("bad_encoding", "field names and values must be UTF-8") from exc
        if name not in FIELDS:
            raise RecordError("unknown_field", f"{name[:40]!r}: expected one of {', '.join(FIELDS)}")
        if len(value) > MAX_VALUE:
            raise RecordError("value_too_long", f"{name} is {len(value)} bytes; at most {MAX_VALUE}")
        out[name] = text
    return out


def _require(fields: dict[str, str], name: str) -> str:
    value = fields.get(name, "").strip()
    if not value:
        raise RecordError("missing_field", name)
    return value


def _checked_id(bid: str) -> str:
    if not ID_RE.match(bid):
        raise RecordError("bad_id", repr(bid)[:80])
    return bid


def _only(values: frozenset[str]) -> str:
    """The default of an optional field: the discoverer's one --app (or --region), if it has one."""
    return next(iter(values)) if len(values) == 1 else ""


def _builder(fields: dict[str, str], rules: Rules, wall: float) -> Builder:
    raw: dict = {"id": fields["id"].strip(), "ip": _require(fields, "address"),
                 "app": fields.get("app") or _only(rules.apps), "region": fields.get("region") or _only(rules.regions)}
    for name in ("app", "region"):
        if not raw[name]:
            raise RecordError("missing_field", f"{name} (this discoverer has no single --{name} to default to)")
    if "port" in fields:
        if not fields["port"].strip().isdigit():
            raise RecordError("bad_port", repr(fields["port"])[:20])
        raw["port"] = int(fields["port"])
    seen = validate([raw], rules, wall)
    if seen.rejected:
        raise seen.rejected[0]
    if not seen.builders:
        raise RecordError("not_wanted", f"app {raw['app']!r} / region {raw['region']!r} is not routed by "
                                        "this discoverer (--app, --region)")
    b = next(iter(seen.builders.values()))
    return replace(b, source=SOURCE_INTENT, registered_at=wall)


class IntentReader:
    """Reads the intents stream after a position, on a client of its own, while told to.

    The loop calls ``start_at(cursor)`` when it (re)loads the set as leader,
    ``stop()`` when it is a standby, reads ``pending`` and, after a write that
    moved the cursor, ``consumed(cursor)``. ``wake`` is set whenever entries arrive.
    """

    def __init__(self, store: Store, *, block_ms: int = 1000, batch: int = 500, command_timeout: float = 1.0,
                 backoff: float = 0.5):
        self.store = store
        self.block_ms = block_ms
        self.batch = batch
        self.command_timeout = command_timeout
        self.backoff = backoff
        self.pending: list[IntentEntry] = []
        self.wake = asyncio.Event()
        self.position: str | None = None  # None: not reading (a standby)
        self._gen = 0  # bumped on every start_at/stop: a read begun before it is dropped
        self._moved = asyncio.Event()
        self._log_once = LogOnce(log)

    def start_at(self, cursor: str) -> None:
        if self.position == cursor and not self.pending:
            return
        self.position, self.pending = cursor, []
        self._gen += 1
        self._moved.set()

    def stop(self) -> None:
        if self.position is not None:
            self.position, self.pending = None, []
            self._gen += 1

    def consumed(self, cursor: str) -> None:
        done = stream_id(cursor)
        self.pending = [e for e in self.pending if stream_id(e.entry_id) > done]

    async def run(self) -> None:
        """Read while leading, until cancelled; nothing that goes wrong ends it (``shared.supervise``)."""
        await supervise.forever(self._step, loop="intents", crashes=metrics.LOOP_CRASHES, backoff=self.backoff,
                                keeping="intents not read; the poll loop goes on")

    async def _step(self) -> None:
        if self.position is None:
            self._moved.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._moved.wait()
            return
        await self._read_once()

    async def _read_once(self) -> None:
        gen, position = self._gen, self.position
        try:
            entries = await bounded(self.store.read_intents(position, block_ms=self.block_ms, count=self.batch),
                                    self.block_ms / 1000 + self.command_timeout, "reading intents")
        except StoreUnavailable as exc:
            self._log_once.warning(f"read:{exc}", "intents not read: %s; retrying in %.1fs", exc, self.backoff)
            await asyncio.sleep(self.backoff)
            return
        except StoreMisuse as exc:  # WRONGTYPE on the stream, NOPERM: the operator's to fix; we keep going
            supervise.report_misuse(exc, metrics.OPERATOR_ERRORS, f"intents not read, retrying in {self.backoff:g}s",
                                    log)
            await asyncio.sleep(self.backoff)
            return
        if gen != self._gen or not entries:
            return  # the position moved while we read (a reload): read again from there
        self.pending.extend(entries)
        self.position = entries[-1].entry_id
        self.wake.set()
