"""Fly.io internal DNS: TXT ``_instances.internal``.

An answer holds records ``instance=<id>,app=<app>,ip=<addr>,region=<code>``
joined by ``;``, possibly split over several character-strings (joined
first). Unknown keys and empty segments are ignored; a record that repeats a
key (two ``ip=``) is ambiguous and rejected.
"""
from __future__ import annotations

import logging
from typing import Iterator

import dns.rcode

from shared.errors import RecordError, SourceError

from . import Answer
from .dns_client import DnsClient, TooBig, join_txt, parse_server  # noqa: F401  (parse_server: re-exported)
from .fly_apps import PerAppSource

log = logging.getLogger(__name__)

INSTANCES_NAME = "_instances.internal"
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
    and, for app patterns, from the last org-wide answer.
    """

    AUTO_PER_APP = 600

    def __init__(self, server: str | None, *, timeout: float = 0.5, name: str = INSTANCES_NAME,
                 per_app: bool = False, apps: frozenset[str] = frozenset(), app_wanted=None):
        self.dns = DnsClient(server, timeout)
        self.name = name
        self.per_app = per_app
        self.apps = apps
        self.app_wanted = app_wanted or (lambda app: not apps or app in apps)
        self._seen_apps: set[str] = set()
        self._per_app = None
        self._last: tuple[bytes, Answer] | None = None
        self._records: dict[bytes, dict | RecordError | None] = {}  # raw record -> parsed

    async def fetch(self) -> Answer:
        if self.per_app:
            if not (self.apps or self._seen_apps):
                await self._org_wide()  # app patterns: learn the names from one org-wide answer
            return await self._apps_source().fetch(sorted(self.apps | self._seen_apps))
        try:
            answer = await self._org_wide()
        except TooBig as exc:
            return await self._switch(str(exc))
        if len(answer.records) >= self.AUTO_PER_APP and (self.apps or self._seen_apps):
            return await self._switch(f"{len(answer.records)} machines in one answer")
        return answer

    async def _switch(self, why: str) -> Answer:
        if not (self.apps or self._seen_apps):
            raise SourceError(f"{why}, and no app names for per-app queries: give --app")
        log.warning("%s: switching to per-app queries for %s", why, ", ".join(sorted(self.apps | self._seen_apps)))
        self.per_app = True
        return await self.fetch()

    def _apps_source(self) -> PerAppSource:
        if self._per_app is None:
            self._per_app = PerAppSource(self.dns)
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
