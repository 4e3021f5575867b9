"""The discoverer's configuration: flags and environment, read in one place."""
from __future__ import annotations

import argparse
import os
import re
import socket
from dataclasses import dataclass, field

from shared.config import HelpFormatter, RedisSettings, add_common, env
from shared.errors import ConfigError, RecordError
from shared.model import DEFAULT_ALLOWED_NETWORKS, Network, domain_of, parse_networks

from .diff import Rules

APP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
from .election import LeaseTimes
from .loop import Timing
from .sources.fly import APPS_REFRESH, parse_server


@dataclass(frozen=True, kw_only=True)
class DiscovererConfig:
    redis: RedisSettings
    source: str = "fly"
    dns_server: str | None = None
    dns_timeout: float = 0.5
    file: str | None = None
    rules: Rules
    timing: Timing = field(default_factory=Timing)
    lease: LeaseTimes = field(default_factory=LeaseTimes)
    holder: str
    stream_maxlen: int = 10_000
    log_format: str = "text"
    log_level: str = "info"
    metrics_listen: str | None = None
    per_app: bool = False
    apps_refresh: float = APPS_REFRESH


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="discoverer",
        formatter_class=HelpFormatter,
        description="Polls a builder source and, as the elected leader, writes the versioned "
        "builder set to Redis in one fenced step per change.",
    )
    add_common(p)
    s = p.add_argument_group("source")
    s.add_argument("--source", choices=("fly", "file"), default=env("XDS_SOURCE", "fly"),
                   help="fly: TXT _instances.internal; file: a JSON list of {id, app, region, ip}")
    s.add_argument("--dns-server", default=env("XDS_DNS_SERVER"),
                   help="HOST:PORT of the DNS server (default: the system resolver)")
    s.add_argument("--dns-timeout", type=float, default=float(env("XDS_DNS_TIMEOUT", "0.5")),
                   help="seconds per DNS query")
    s.add_argument("--file", default=env("XDS_FILE"), help="path of the JSON file for --source file")
    b = p.add_argument_group("builders")
    b.add_argument("--sni-template", default=env("XDS_SNI_TEMPLATE", "{id}.builders.internal"),
                   help="SNI of a builder; may use {id}, {app}, {region}")
    b.add_argument("--builder-port", type=int, default=int(env("XDS_BUILDER_PORT", "443")),
                   help="TCP port of every builder (a file record may set its own 'port')")
    b.add_argument("--app", action="append", default=None,
                   help="machines of this Fly app are builders: an exact name or a regex matched in full "
                   "(repeatable; env XDS_APPS, comma-separated). Required with --source fly: the org-wide answer "
                   "lists every machine of the organisation, and only the named apps may be routed to")
    b.add_argument("--region", action="append", default=None,
                   help="only builders in this Fly region (repeatable; env XDS_REGIONS, comma-separated)")
    s.add_argument("--per-app", action="store_true", default=env("XDS_PER_APP") == "1",
                   help="query vms.<app>.internal and <id>.vm.<app>.internal per app instead of the org-wide "
                   "_instances.internal (automatic past 600 machines); needs --app names or patterns")
    s.add_argument("--apps-refresh", type=float, default=float(env("XDS_APPS_REFRESH", str(APPS_REFRESH))),
                   help="in per-app mode with --app patterns: seconds between reads of _apps.internal (the org's "
                   "app names), so a new matching app is polled without a restart (env XDS_APPS_REFRESH)")
    b.add_argument("--allow-cidr", action="append", default=None,
                   help="networks builder addresses must be in (repeatable; default "
                   + ", ".join(DEFAULT_ALLOWED_NETWORKS) + "; env XDS_ALLOW_CIDRS, comma-separated)")
    w = p.add_argument_group("polling and writing")
    w.add_argument("--poll-interval", type=float, default=float(env("XDS_POLL_INTERVAL", "0.1")),
                   help="seconds between polls")
    w.add_argument("--error-backoff", type=float, default=1.0, help="seconds to wait after a failed poll (with jitter)")
    w.add_argument("--removal-grace", type=float, default=0.5,
                   help="seconds a builder must be missing before its route is removed")
    w.add_argument("--mass-removal-share", type=float, default=0.5,
                   help="a poll removing more than this share of the set is held")
    w.add_argument("--mass-removal-hold", type=float, default=5.0,
                   help="seconds a mass removal must persist before it is applied")
    w.add_argument("--stream-maxlen", type=int, default=10_000, help="approximate length of the changes stream")
    w.add_argument("--confirm-grace", type=float, default=float(env("XDS_CONFIRM_GRACE", "30")),
                   help="seconds a builder registered by an intent may go unlisted by DNS before it is removed; "
                   "also how long DNS may not bring back a deregistered builder")
    e = p.add_argument_group("leader election")
    e.add_argument("--lease-ttl", type=float, default=2.0, help="seconds of the leader lease")
    e.add_argument("--id", default=env("XDS_DISCOVERER_ID"), help="holder id (default: host:pid)")
    return p


def allowed_networks(values: list[str] | None) -> tuple[Network, ...]:
    raw = values or (env("XDS_ALLOW_CIDRS") or ",".join(DEFAULT_ALLOWED_NETWORKS)).split(",")
    try:
        return parse_networks(raw)
    except ValueError as exc:
        raise ConfigError(f"bad --allow-cidr: {exc}") from exc


def from_args(argv: list[str] | None = None) -> DiscovererConfig:
    a = parser().parse_args(argv)
    if a.source == "file" and not a.file:
        raise ConfigError("--source file needs --file PATH")
    if a.confirm_grace < 0:
        raise ConfigError("--confirm-grace must be >= 0 seconds")
    if a.poll_interval <= 0 or a.lease_ttl <= 0.4:
        raise ConfigError("--poll-interval must be > 0 and --lease-ttl > 0.4 s")
    if a.source == "fly" and a.dns_server:
        parse_server(a.dns_server)  # a typo fails at startup, not at every poll
    try:
        domain_of(a.sni_template)
    except RecordError as exc:
        raise ConfigError(f"bad --sni-template: {exc}") from exc
    apps = [x.strip().lower() for x in a.app or (env("XDS_APPS") or "").split(",") if x.strip()]
    regions = [x.strip().lower() for x in a.region or (env("XDS_REGIONS") or "").split(",") if x.strip()]
    exact = frozenset(x for x in apps if APP_NAME.fullmatch(x))
    try:
        patterns = tuple(re.compile(x) for x in apps if x not in exact)
    except re.error as exc:
        raise ConfigError(f"bad --app pattern: {exc}") from exc
    if a.source == "fly" and not apps:
        raise ConfigError("--source fly needs --app APP (or XDS_APPS): the Fly app(s) whose machines are builders; "
                          "without it every machine of the organisation would be routable")
    if a.apps_refresh <= 0:
        raise ConfigError("--apps-refresh must be > 0 seconds")
    if a.per_app and not apps:
        raise ConfigError("--per-app needs --app (names or patterns)")
    rules = Rules(sni_template=a.sni_template, port=a.builder_port, allowed=allowed_networks(a.allow_cidr),
                  grace=a.removal_grace, mass_share=a.mass_removal_share, mass_hold=a.mass_removal_hold,
                  apps=exact, app_patterns=patterns, regions=frozenset(regions), confirm_grace=a.confirm_grace)
    return DiscovererConfig(
        redis=RedisSettings.from_args(a), source=a.source, dns_server=a.dns_server, dns_timeout=a.dns_timeout,
        file=a.file, rules=rules, timing=Timing(interval=a.poll_interval, backoff=a.error_backoff),
        lease=LeaseTimes(ttl=a.lease_ttl), holder=a.id or f"{socket.gethostname()}:{os.getpid()}",
        stream_maxlen=a.stream_maxlen, log_format=a.log_format, log_level=a.log_level,
        metrics_listen=a.metrics_listen, per_app=a.per_app, apps_refresh=a.apps_refresh,
    )
