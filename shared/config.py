"""Options every command shares, from flags with environment fallbacks, and the checks of every flag.

Each service turns its parsed flags into one frozen dataclass in one place
(``discoverer.config``, ``xds_server.config``); nothing else reads os.environ.

Every flag is checked when the command starts: a bad value is a ConfigError
whose text is one line, ``--flag: wants WHAT (got 'VALUE')``, which the
commands print as ``error: ...`` with exit code 2 (``Parser`` turns argparse's
own errors into the same form). ``HOST:PORT`` is parsed in ``shared.addr``.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from .addr import parse_hostport, parse_port, require_ip
from .connect import parse_url, redact
from .errors import ConfigError, RecordError
from .keys import DEFAULT_PREFIX, Keys
from .model import domain_of

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
LOG_LEVELS = ("debug", "info", "warning", "error")


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def defaults(config: type) -> SimpleNamespace:
    """A config dataclass's field defaults by name, for its flags: each default is written once."""
    return SimpleNamespace(**{f.name: f.default for f in fields(config) if f.default is not MISSING})


# --- argparse types: each checks a value and says what it wants ------------------------------

def checker(wants: str | None, metavar: str | None = None) -> Callable[[Callable], Callable[[str], object]]:
    """Decorate ``parse(value)`` (raising ValueError, ConfigError or RecordError) into an argparse type
    whose error reads ``wants WHAT (got 'VALUE')``; with ``wants`` None, the error's own text (for
    values that must not be echoed, such as a Redis URL with a password). ``metavar`` names the value
    in --help."""
    def wrap(parse: Callable) -> Callable[[str], object]:
        def check(value: str):
            try:
                return parse(value)
            except (ValueError, ConfigError, RecordError) as exc:
                raise argparse.ArgumentTypeError(str(exc) if wants is None else f"wants {wants} (got {value!r})") \
                    from None
        check.__name__, check.metavar = parse.__name__, metavar
        return check
    return wrap


def number(cast: type, *, above: float | None = None, at_least: float | None = None,
           at_most: float | None = None, unit: str = "", metavar: str = "N") -> Callable[[str], object]:
    """A number type: ``above`` (exclusive), ``at_least`` / ``at_most`` (inclusive)."""
    bounds = [f"> {above:g}" if above is not None else "", f">= {at_least:g}" if at_least is not None else "",
              f"<= {at_most:g}" if at_most is not None else ""]
    noun = "an integer" if cast is int else "a number"
    wants = " ".join(x for x in (unit or noun, " and ".join(b for b in bounds if b)) if x)

    def parse(value: str):
        n = cast(value)
        if not math.isfinite(n) or (above is not None and n <= above) or (at_least is not None and n < at_least) \
                or (at_most is not None and n > at_most):
            raise ValueError(value)
        return n
    parse.__name__ = cast.__name__
    return checker(wants, metavar)(parse)


seconds = number(float, above=0, unit="seconds", metavar="SECONDS")
seconds_or_zero = number(float, at_least=0, unit="seconds", metavar="SECONDS")
positive_int = number(int, at_least=1)
port = checker("a port 1-65535", "PORT")(parse_port)


def hostport(*, default_port: int | None = None, default_host: str | None = None,
             ip_only: bool = False) -> Callable[[str], str]:
    """HOST:PORT (returned unchanged, the services keep the string)."""
    wants = ("IP" if ip_only else "HOST") + (":PORT" if default_port is None else "[:PORT]")
    if default_host is not None:
        wants = "[HOST:]PORT"

    @checker(f"{wants} with a port 1-65535", wants)
    def host_port(value: str) -> str:
        parse_hostport(value, default_port=default_port, default_host=default_host, ip_only=ip_only)
        return value
    return host_port


@checker("HOST:PORT[,HOST:PORT...] with ports 1-65535", "HOST:PORT[,...]")
def hostports(value: str) -> str:
    parts = [p for p in value.split(",") if p.strip()]
    if not parts:
        raise ValueError(value)
    for part in parts:
        parse_hostport(part)
    return value


@checker("an IP address", "IP")
def ip_address(value: str) -> str:
    require_ip(value)
    return value


@checker("a readable file", "FILE")
def existing_file(value: str) -> str:
    path = Path(value)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError(value)
    return value


@checker("a non-empty value")
def non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError(value)
    return value


@checker(None, "URL")
def redis_url(value: str) -> str:
    parse_url(value)  # its ConfigError names the URL with the password hidden
    return value


@checker("a prefix with a non-empty hash tag, e.g. '{xds}'")
def key_prefix(value: str) -> str:
    Keys(value)
    return value


@checker("a template like '{id}.builders.internal': placeholders in the first label, then a fixed domain")
def sni_template(value: str) -> str:
    domain_of(value)
    return value


def truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


# --- parser and help ----------------------------------------------------------------------

class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows ``(default: X)`` only where it means something: not for None, False or required flags,
    and not where the help already says it (``flag`` writes its own, with the env variable)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if getattr(action, "documented", False) or "default" in text.lower() or action.required \
                or action.default in (None, False, [], "", argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        return getattr(action.type, "metavar", None) or action.dest.upper()


class Parser(argparse.ArgumentParser):
    """argparse that refuses a bad flag with a ConfigError of one line (exit code 2 in every
    command), not a usage dump and never a traceback."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise ConfigError(_one_line(message))

    def _check_value(self, action: argparse.Action, value) -> None:
        if action.choices is not None and value not in action.choices:
            wants = ", ".join(map(str, action.choices))
            raise argparse.ArgumentError(action, f"wants one of {wants} (got {value!r})")


def _one_line(message: str) -> str:
    """argparse's 'argument --x: ...' as '--x: ...'; 'required: --a, --b' as '--a: required'."""
    message = " ".join(message.split())
    if message.startswith("argument "):
        message = message.removeprefix("argument ")
        name, _, rest = message.partition(": ")
        return f"{name.split('/')[-1]}: {rest}"
    required = "the following arguments are required: "
    if message.startswith(required):
        return f"{message.removeprefix(required)}: required"
    return message


def flag(group, *names: str, env: str | None = None, default=None, shown: str | None = None, help: str,
         **kwargs) -> argparse.Action:
    """``group.add_argument`` whose default comes from ``env`` when it is set; the help names the
    built-in default (or ``shown``, what the flag's absence means) and the variable. A bad value in
    the variable is a ConfigError at startup."""
    if shown is None and default is not None and default is not False and default != "":
        shown = str(default)
    if env is not None and env in os.environ:
        default = _from_env(names[-1], env, os.environ[env], kwargs)
    notes = "; ".join(n for n in (f"default: {shown}" if shown else "", f"env {env}" if env else "") if n)
    text = f"{help} ({notes})" if notes else help
    action = group.add_argument(*names, default=default, help=text.replace("%", "%%"), **kwargs)
    action.documented = True
    return action


def _from_env(name: str, var: str, raw: str, kwargs: dict):
    if kwargs.get("action") == "store_true":
        return truthy(raw)
    try:
        value = kwargs.get("type", str)(raw)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{name} (from env {var}): {exc}") from None
    choices = kwargs.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{name} (from env {var}): wants one of {', '.join(choices)} (got {raw!r})")
    return value


def add_common(parser: argparse.ArgumentParser, *, with_metrics: bool = True, with_logs: bool = True) -> None:
    g = parser.add_argument_group("common")
    flag(g, "--redis-url", env="XDS_REDIS_URL", default=DEFAULT_REDIS_URL, type=redis_url,
         help="Redis URL: redis://HOST:PORT/DB, rediss:// (TLS), unix://PATH, "
         "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB], "
         "redis+cluster://HOST:PORT[,HOST:PORT...] (rediss+sentinel, rediss+cluster: TLS); see docs/scaling.md")
    flag(g, "--prefix", env="XDS_PREFIX", default=DEFAULT_PREFIX, type=key_prefix,
         help="key prefix with a hash tag, e.g. '{xds}'")
    if with_logs:
        flag(g, "--log-format", env="XDS_LOG_FORMAT", default="text", choices=("text", "json"),
             help="log line format")
        flag(g, "--log-level", env="XDS_LOG_LEVEL", default="info", choices=LOG_LEVELS, type=str.lower,
             help="least severe level logged")
    if with_metrics:
        flag(g, "--metrics-listen", env="XDS_METRICS_LISTEN", type=hostport(default_host="127.0.0.1"),
             shown="off",
             help="serve Prometheus /metrics on [HOST:]PORT (HOST 127.0.0.1 when left out)")


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
