"""Options every command shares, from flags with environment fallbacks.

Each service turns its parsed flags into one frozen dataclass in one place
(``discoverer.config``, ``xds_server.config``); nothing else reads os.environ.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from .connect import parse_url, redact
from .keys import DEFAULT_PREFIX, Keys

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def add_common(parser: argparse.ArgumentParser, *, with_metrics: bool = True) -> None:
    g = parser.add_argument_group("common")
    g.add_argument("--redis-url", default=env("XDS_REDIS_URL", DEFAULT_REDIS_URL),
                   help="Redis URL: redis://HOST:PORT/DB, rediss:// (TLS), unix://PATH, "
                   "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB], "
                   "redis+cluster://HOST:PORT[,HOST:PORT...] (rediss+sentinel, rediss+cluster: TLS); "
                   "see docs/scaling.md (env XDS_REDIS_URL)")
    g.add_argument("--prefix", default=env("XDS_PREFIX", DEFAULT_PREFIX),
                   help="key prefix with a hash tag, e.g. '{xds}' (env XDS_PREFIX)")
    g.add_argument("--log-format", choices=("text", "json"), default=env("XDS_LOG_FORMAT", "text"),
                   help="log line format (env XDS_LOG_FORMAT)")
    g.add_argument("--log-level", default=env("XDS_LOG_LEVEL", "info"),
                   help="debug, info, warning or error (env XDS_LOG_LEVEL)")
    if with_metrics:
        g.add_argument("--metrics-listen", default=env("XDS_METRICS_LISTEN"),
                       help="serve Prometheus /metrics on HOST:PORT (env XDS_METRICS_LISTEN)")


@dataclass(frozen=True, kw_only=True)
class RedisSettings:
    url: str = DEFAULT_REDIS_URL
    prefix: str = DEFAULT_PREFIX
    keys: Keys = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", Keys(self.prefix))
        parse_url(self.url)  # a malformed URL is a ConfigError (exit code 2) before anything starts

    def __repr__(self) -> str:
        return f"RedisSettings(url={redact(self.url)!r}, prefix={self.prefix!r})"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RedisSettings":
        return cls(url=args.redis_url, prefix=args.prefix)
