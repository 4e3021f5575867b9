"""``HOST:PORT``: the one parser of addresses in the project (flags, Redis URLs, bootstraps, the DNS
resolvers the discoverer asks), and its inverse. ValueError says what is wrong; ``shared.config`` turns it
into a flag's one-line error."""
from __future__ import annotations

import ipaddress
import re

HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def parse_hostport(value: str, *, default_port: int | None = None, default_host: str | None = None,
                   ip_only: bool = False, any_port: bool = False) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``; ``HOST`` alone with a ``default_port``; ``PORT`` or ``:PORT``
    alone with a ``default_host``. ValueError says what is wrong; the port is 1-65535 (``any_port``:
    0 too, a bind to a port the kernel picks)."""
    value = value.strip()
    if value.startswith("["):
        host, close, rest = value[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ValueError("an IPv6 address in brackets, e.g. [::1]:PORT")
        port = rest[1:] if rest else None
        require_ip(host)
    elif value.count(":") > 1:
        raise ValueError(f"an IPv6 address in brackets, e.g. [{value}]" + (f":{default_port}" if default_port else ""))
    elif ":" in value:
        host, _, port = value.partition(":")
    elif default_host is not None and value.isdigit():
        host, port = "", value
    else:
        host, port = value, None
    host = host or (default_host or "")
    if not host:
        raise ValueError("a host before the port")
    if ip_only:
        require_ip(host)
    elif not HOSTNAME.fullmatch(host) and not is_ip(host):
        raise ValueError(f"a host name or IP address, not {host!r}")
    if port is None:
        if default_port is None:
            raise ValueError("HOST:PORT (a port is missing)")
        return host, default_port
    return host, 0 if any_port and port.strip() == "0" else parse_port(port)


def join_hostport(host: str, port: int) -> str:
    """The inverse of parse_hostport: IPv6 in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_port(value: str | int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"a port 1-65535, not {value!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"a port 1-65535, not {number}")
    return number


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def require_ip(host: str) -> None:
    """ValueError unless ``host`` is an IPv4 or IPv6 address."""
    if not is_ip(host):
        raise ValueError(f"an IP address, not {host!r}")
