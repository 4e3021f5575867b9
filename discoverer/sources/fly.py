"""Fly.io internal DNS: TXT ``_instances.internal``.

An answer holds records ``instance=<id>,app=<app>,ip=<addr>,region=<code>``
joined by ``;``, possibly split over several character-strings (joined
first). Unknown keys and empty segments are ignored; a record that repeats a
key (two ``ip=``) is ambiguous and rejected.
"""
from __future__ import annotations

import logging
import time
from typing import Iterator

import dns.rcode

from shared.errors import RecordError, SourceError
from shared.logs import LogOnce
from shared.model import APP_RE

from . import Answer
from .dns_client import DnsClient, TooBig, join_txt, parse_server  # noqa: F401  (parse_server: re-exported)
from .fly_apps import PerAppSource

log = logging.getLogger(__name__)

INSTANCES_NAME = "_instances.internal"
APPS_NAME = "_apps.internal"  # TXT: the org's app names, comma-separated
APPS_REFRESH = 5.0  # seconds between reads of APPS_NAME in per-app mode with app patterns
MAX_SEGMENT = 1024  # a sane record is about 90 bytes
KEY_MAP = {"instance": "id", "app": "app", "ip": "ip", "region": "region"}


def parse_instances(payload: bytes, cache: dict | None = None) -> Iterator[dict | RecordError]:
    """Yield one dict per record, or a RecordError for a record that is unusable.

    With ``cache`` (kept and bounded by the caller), a record seen before is
    not parsed again; the same dict is yielded, so callers must not change it.
    """
    for segment in payload.split(b";"):
        if cache is None:
            item = parse_record(segment)
        else:
            item = cache.get(segment)
            if item is None:
                item = cache[segment] = parse_record(segment)
        if item is not None:
            yield item


def parse_record(segment: bytes) -> dict | RecordError | None:
    """One ``instance=..,app=..,ip=..,region=..`` record; None for an empty segment."""
    segment = segment.strip()
    if not segment:
        return None
    if len(segment) > MAX_SEGMENT:
        return RecordError("too_long", f"{len(segment)} bytes")
    try:
        text = segment.decode("utf-8")
    except UnicodeDecodeError:
        return RecordError("not_utf8", repr(segment[:60]))
    fields: dict[str, str] = {}
    repeated = False
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if sep and key in KEY_MAP:
            repeated |= KEY_MAP[key] in fields
            fields[KEY_MAP[key]] = value.strip()
    if repeated:
        return RecordError("duplicate_key", repr(text[:80]))
    if "id" not in fields or "ip" not in fields:
        return RecordError("missing_field", repr(text[:80]))
    return fields


class FlySource:
    """The org-wide ``_instances.internal`` answer; per-app queries when it is too big.

    Per-app mode (``per_app=True``, or automatic once an org-wide answer holds
    ``AUTO_PER_APP`` records or no longer fits a DNS message) asks each builder
    app's ``vms.<app>.internal``. App names come from ``apps`` (exact names)
    and, with ``learn`` (app patterns), from ``_apps.internal`` (a small TXT
    list of the org's app names), read again every ``apps_refresh`` seconds, so
    an app created later is polled without a restart. A learned app is dropped
    only when ``_apps.internal`` no longer lists it and it has no machine left:
    one short answer never removes a whole app's routes. Without an
    ``_apps.internal`` answer, the names come from the last org-wide answer.
    ``address_kinds``: the DNS types a machine's address is asked as in per-app
    mode (AAAA, then A where the allow-list holds IPv4). With ``check_others``,
    per-app mode also reads, every ``apps_refresh``
    seconds, the addresses of the other apps' machines (``<app>.internal``
    A/AAAA for each app ``_apps.internal`` names that is not a builder app), so a
    registration intent for one of them is refused as in org-wide mode.
    """

    AUTO_PER_APP = 600

    def __init__(self, server: str | None, *, timeout: float = 0.5, name: str = INSTANCES_NAME,
                 per_app: bool = False, apps: frozenset[str] = frozenset(), app_wanted=None,
                 learn: bool | None = None, apps_refresh: float = APPS_REFRESH,
                 address_kinds: tuple[str, ...] = ("AAAA",), check_others: bool = False):
        self.dns = DnsClient(server, timeout)
        self.name = name
        self.per_app = per_app
        self.apps = apps
        self.app_wanted = app_wanted or (lambda app: not apps or app in apps)
        self.learn = app_wanted is not None if learn is None else learn
        self.apps_refresh = apps_refresh
        self._seen_apps: set[str] = set()  # learned app names (org-wide answer or _apps.internal)
        self._listed: set[str] = set()  # the names in the last _apps.internal answer
        self._apps_due = 0.0  # monotonic time of the next _apps.internal read
        self._per_app = None
        self.address_kinds = address_kinds
        self.check_others = check_others
        self._others: dict[str, str] = {}  # address -> app, of apps that are not builder apps
        self._others_due = 0.0
        self._last: tuple[bytes, Answer] | None = None
        self._records: dict[bytes, dict | RecordError | None] = {}  # raw record -> parsed
        self._log_once = LogOnce(log, every=60.0)

    async def fetch(self) -> Answer:
        if self.per_app:
            return await self._fetch_per_app()
        try:
            answer = await self._org_wide()
        except TooBig as exc:
            return await self._switch(str(exc))
        if len(answer.records) >= self.AUTO_PER_APP and (self.apps or self._seen_apps):
            return await self._switch(f"{len(answer.records)} machines in one answer")
        return answer

    async def _switch(self, why: str) -> Answer:
        if not (self.apps or self._seen_apps or self.learn):
            raise SourceError(f"{why}, and no app names for per-app queries: give --app")
        log.warning("%s: switching to per-app queries for %s", why,
                    ", ".join(sorted(self.apps | self._seen_apps)) or "the apps _apps.internal names")
        self.per_app = True
        return await self.fetch()

    async def _fetch_per_app(self) -> Answer:
        if self.learn and time.monotonic() >= self._apps_due:
            await self._refresh_apps()
        source = self._apps_source()
        answer = await source.fetch(sorted(self.apps | self._seen_apps))
        if self.check_others and time.monotonic() >= self._others_due:
            await self._refresh_others(source)
        answer.other_apps = self._others
        gone = (source.absent & self._seen_apps) - self._listed - self.apps
        if gone and self._listed:
            log.info("app(s) %s: no longer in %s and no machine left; no longer polled",
                     ", ".join(sorted(gone)), APPS_NAME)
            self._seen_apps -= gone
        return answer

    async def _refresh_apps(self) -> None:
        """Read the org's app names; keep the known ones when the answer fails."""
        self._apps_due = time.monotonic() + self.apps_refresh
        try:
            listed = await self._app_names()
        except SourceError as exc:
            if self.apps or self._seen_apps:
                self._log_once.warning(f"apps:{exc}", "%s; polling the apps known so far (%s)", exc,
                                       ", ".join(sorted(self.apps | self._seen_apps)))
                return
            log.warning("%s; learning app names from one org-wide answer instead", exc)
            self._apps_due = 0.0  # no names yet: ask again at the next poll
            await self._org_wide()
            return
        new = {a for a in listed if self.app_wanted(a)} - self._seen_apps - self.apps
        if new:
            log.info("app(s) %s in %s: polling them", ", ".join(sorted(new)), APPS_NAME)
        self._listed = listed
        self._seen_apps |= new

    async def _refresh_others(self, source: PerAppSource) -> None:
        """The addresses of the machines of every app that is not a builder app; the last ones on failure."""
        self._others_due = time.monotonic() + self.apps_refresh
        try:
            names = await self._app_names()
        except SourceError as exc:
            self._log_once.warning(f"others:{exc}", "%s; checking intents against the other apps' addresses "
                                   "read before (%d)", exc, len(self._others))
            return
        others = sorted(a for a in names if not self.app_wanted(a))
        self._others = await source.addresses_of(others)

    async def _app_names(self) -> set[str]:
        resp = await self.dns.query(APPS_NAME, "TXT")
        names = set()
        for raw in join_txt(resp).replace(b";", b",").split(b","):
            name = raw.strip().decode("utf-8", "replace").lower()
            if APP_RE.match(name):
                names.add(name)
            elif name:
                self._log_once.warning(f"appname:{name[:80]}", "%s lists %r, not an app name; ignored",
                                       APPS_NAME, name[:80])
        if not names:
            raise SourceError(f"DNS {APPS_NAME}: no app names ({dns.rcode.to_text(resp.rcode())})")
        return names

    def _apps_source(self) -> PerAppSource:
        if self._per_app is None:
            self._per_app = PerAppSource(self.dns, self.address_kinds)
        return self._per_app

    async def _org_wide(self) -> Answer:
        resp = await self.dns.query(self.name, "TXT")
        payload = join_txt(resp)
        if not payload.strip(b"; "):
            # The discoverer itself is a started machine of the org, so a real
            # answer is never empty: treat it as a failure, keep the last set.
            raise SourceError(f"DNS {self.name}: empty answer ({dns.rcode.to_text(resp.rcode())})")
        if self._last is not None and self._last[0] == payload:
            return self._last[1]  # the same object: the loop skips validating it again
        if len(self._records) > 4 * payload.count(b";") + 1024:
            self._records.clear()
        answer = Answer()
        for item in parse_instances(payload, self._records):
            (answer.rejected if isinstance(item, RecordError) else answer.records).append(item)
        self._seen_apps = {str(r.get("app", "")).lower() for r in answer.records
                           if r.get("app") and self.app_wanted(str(r["app"]).lower())}
        self._last = (payload, answer)
        return answer

    async def aclose(self) -> None:
        pass
