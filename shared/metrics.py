"""Prometheus exposition for both services (``--metrics-listen HOST:PORT``)."""
from __future__ import annotations

import logging

from prometheus_client import start_http_server

log = logging.getLogger(__name__)


def split_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return default_host, int(value)
    return host.strip("[]") or default_host, int(port)


def serve(listen: str | None) -> None:
    if not listen:
        return
    host, port = split_hostport(listen)
    start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)
