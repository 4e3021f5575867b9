"""The discoverer's configuration: flags and environment, read in one place."""
from __future__ import annotations

import argparse
import os
import re
import socket
from dataclasses import dataclass, field

from shared.config import (Parser, RedisSettings, add_common, checker, env, existing_file, flag, non_empty, number,
                           port, positive_int, seconds, seconds_or_zero, sni_template)
from shared.errors import ConfigError
from shared.model import DEFAULT_ALLOWED_NETWORKS, DEFAULT_SNI_TEMPLATE, Network, parse_networks

from shared.store import DEFAULT_STREAM_MAXLEN

from .election import LeaseTimes
from .loop import Timing
from .rules import Rules
from .sources.fly import APPS_REFRESH, parse_server

APP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


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
    stream_maxlen: int = DEFAULT_STREAM_MAXLEN
    log_format: str = "text"
    log_level: str = "info"
    metrics_listen: str | None = None
    per_app: bool = False
    apps_refresh: float = APPS_REFRESH


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="discoverer",
        description="Polls a builder source and, as the elected leader, writes the versioned "
        "builder set to Redis in one fenced step per change.",
    )
    add_common(p)
    add_source_and_builders(p)
    add_polling(p.add_argument_group("polling and writing"))
    e = p.add_argument_group("leader election")
    flag(e, "--lease-ttl", env="XDS_LEASE_TTL", default=LeaseTimes.ttl, type=lease_ttl, help="seconds of the leader lease")
    flag(e, "--takeover-delay", env="XDS_TAKEOVER_DELAY", default=LeaseTimes.takeover_delay, type=seconds_or_zero,
         help="seconds a free lease must stay free before this discoverer takes it: give discoverers far from "
         "the Redis primary a delay (e.g. 1) so one near it leads (docs/regions.md)")
    flag(e, "--id", env="XDS_DISCOVERER_ID", type=non_empty, shown="HOST:PID", help="holder id")
    return p


def add_source_and_builders(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("source")
    flag(s, "--source", env="XDS_SOURCE", default=DiscovererConfig.source, choices=("fly", "file"),
         help="fly: TXT _instances.internal; file: a JSON list of {id, app, region, ip}")
    flag(s, "--dns-server", env="XDS_DNS_SERVER", type=dns_server, shown="the system resolver",
         help="IP[:PORT] of the DNS server (on Fly: [fdaa::3]:53)")
    flag(s, "--dns-timeout", env="XDS_DNS_TIMEOUT", default=DiscovererConfig.dns_timeout, type=seconds, help="seconds per DNS query")
    flag(s, "--file", env="XDS_FILE", type=existing_file, help="path of the JSON file for --source file")
    b = p.add_argument_group("builders")
    flag(b, "--sni-template", env="XDS_SNI_TEMPLATE", default=DEFAULT_SNI_TEMPLATE, type=sni_template,
         help="SNI of a builder; may use {id}, {app}, {region}")
    flag(b, "--builder-port", env="XDS_BUILDER_PORT", default=443, type=port,
         help="TCP port of every builder (a file record may set its own 'port')")
    b.add_argument("--app", action="append", default=None,
                   help="machines of this Fly app are builders: an exact name or a regex matched in full "
                   "(repeatable; env XDS_APPS, comma-separated). Required with --source fly: the org-wide answer "
                   "lists every machine of the organisation, and only the named apps may be routed to")
    b.add_argument("--region", action="append", default=None,
                   help="only builders in this Fly region (repeatable; env XDS_REGIONS, comma-separated)")
    flag(s, "--per-app", env="XDS_PER_APP", action="store_true",
         help="query vms.<app>.internal and <id>.vm.<app>.internal per app instead of the org-wide "
         "_instances.internal (automatic past 600 machines); needs --app names or patterns")
    flag(s, "--apps-refresh", env="XDS_APPS_REFRESH", default=APPS_REFRESH, type=seconds,
         help="in per-app mode with --app patterns: seconds between reads of _apps.internal (the org's "
         "app names), so a new matching app is polled without a restart")
    b.add_argument("--allow-cidr", action="append", default=None,
                   help="networks builder addresses must be in (repeatable; default "
                   + ", ".join(DEFAULT_ALLOWED_NETWORKS) + "; env XDS_ALLOW_CIDRS, comma-separated)")


def add_polling(w) -> None:
    flag(w, "--poll-interval", env="XDS_POLL_INTERVAL", default=Timing.interval, type=seconds,
         help="seconds between polls")
    flag(w, "--error-backoff", env="XDS_ERROR_BACKOFF", default=Timing.backoff, type=seconds,
         help="seconds to wait after a failed poll (with jitter)")
    flag(w, "--removal-grace", env="XDS_REMOVAL_GRACE", default=Rules.grace, type=seconds_or_zero,
         help="seconds a builder must be missing before its route is removed")
    flag(w, "--mass-removal-share", env="XDS_MASS_REMOVAL_SHARE", default=Rules.mass_share, type=share,
         help="a poll removing more than this share of the set is held")
    flag(w, "--mass-removal-hold", env="XDS_MASS_REMOVAL_HOLD", default=Rules.mass_hold, type=seconds_or_zero,
         help="seconds a mass removal must persist before it is applied")
    flag(w, "--stream-maxlen", env="XDS_STREAM_MAXLEN", default=DEFAULT_STREAM_MAXLEN, type=positive_int,
         help="approximate length of the changes stream")
    add_intent_caps(w)


def add_intent_caps(w) -> None:
    flag(w, "--confirm-grace", env="XDS_CONFIRM_GRACE", default=Rules.confirm_grace, type=seconds_or_zero,
         help="seconds a builder registered by an intent may go unlisted by DNS before it is removed (from its "
         "first registration: registering again does not extend it); also how long DNS may not bring back a "
         "deregistered builder")
    flag(w, "--max-unconfirmed", env="XDS_MAX_UNCONFIRMED", default=Rules.max_unconfirmed, type=positive_int,
         help="registrations DNS does not list yet routed at once; intents past it are rejected")
    flag(w, "--mass-deregistration-share", env="XDS_MASS_DEREGISTRATION_SHARE",
         default=Rules.mass_deregistration_share, type=share,
         help="deregistering more than this share of the builders DNS lists within --confirm-grace is held "
         "(those intents are rejected; always at least one is allowed)")


@checker("IP, IP:PORT or [IPv6]:PORT with a port 1-65535", "IP[:PORT]")
def dns_server(value: str) -> str:
    parse_server(value)
    return value


share = number(float, above=0, at_most=1, unit="a share", metavar="SHARE")
lease_ttl = number(float, above=0.4, unit="seconds", metavar="SECONDS")


def allowed_networks(values: list[str] | None) -> tuple[Network, ...]:
    raw = values or (env("XDS_ALLOW_CIDRS") or ",".join(DEFAULT_ALLOWED_NETWORKS)).split(",")
    try:
        return parse_networks(raw)
    except ValueError as exc:
        raise ConfigError(f"--allow-cidr: wants networks like 10.0.0.0/8 ({exc})") from exc


def from_args(argv: list[str] | None = None) -> DiscovererConfig:
    a = parser().parse_args(argv)
    if a.source == "file" and not a.file:
        raise ConfigError("--file: required with --source file (a JSON list of builders)")
    apps = [x.strip().lower() for x in a.app or (env("XDS_APPS") or "").split(",") if x.strip()]
    regions = [x.strip().lower() for x in a.region or (env("XDS_REGIONS") or "").split(",") if x.strip()]
    exact = frozenset(x for x in apps if APP_NAME.fullmatch(x))
    try:
        patterns = tuple(re.compile(x) for x in apps if x not in exact)
    except re.error as exc:
        raise ConfigError(f"--app: wants a name or a regular expression ({exc})") from exc
    if a.source == "fly" and not apps:
        raise ConfigError("--source fly needs --app APP (or XDS_APPS): the Fly app(s) whose machines are builders; "
                          "without it every machine of the organisation would be routable")
    if a.per_app and not apps:
        raise ConfigError("--per-app needs --app (names or patterns)")
    rules = Rules(sni_template=a.sni_template, port=a.builder_port, allowed=allowed_networks(a.allow_cidr),
                  grace=a.removal_grace, mass_share=a.mass_removal_share, mass_hold=a.mass_removal_hold,
                  apps=exact, app_patterns=patterns, regions=frozenset(regions), confirm_grace=a.confirm_grace,
                  max_unconfirmed=a.max_unconfirmed, mass_deregistration_share=a.mass_deregistration_share)
    return DiscovererConfig(
        redis=RedisSettings.from_args(a), source=a.source, dns_server=a.dns_server, dns_timeout=a.dns_timeout,
        file=a.file, rules=rules, timing=Timing(interval=a.poll_interval, backoff=a.error_backoff),
        lease=LeaseTimes(ttl=a.lease_ttl, takeover_delay=a.takeover_delay), holder=a.id or f"{socket.gethostname()}:{os.getpid()}",
        stream_maxlen=a.stream_maxlen, log_format=a.log_format, log_level=a.log_level,
        metrics_listen=a.metrics_listen, per_app=a.per_app, apps_refresh=a.apps_refresh,
    )
