"""Prometheus exposition for both services (``--metrics-listen [HOST:]PORT``)."""
from __future__ import annotations

import logging

from prometheus_client import start_http_server

from .addr import join_hostport, parse_hostport
from .errors import ConfigError

log = logging.getLogger(__name__)


def serve(listen: str | None) -> None:
    if not listen:
        return
    host, port = parse_hostport(listen, default_host="127.0.0.1")
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise ConfigError(f"--metrics-listen: cannot listen on {listen} ({exc.strerror or exc})") from exc
    log.info("metrics on http://%s/metrics", join_hostport(host, port))
