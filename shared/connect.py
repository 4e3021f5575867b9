"""Redis connections from URLs, and the boundary where redis errors are translated."""
from __future__ import annotations

import contextlib
import urllib.parse
from typing import AsyncIterator

import redis.asyncio as aioredis
import redis.exceptions

from .errors import ConfigError, StoreUnavailable

REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def redact(url: str) -> str:
    """The URL with any password replaced, safe to log."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def connect(url: str, *, timeout: float = 2.0, name: str | None = None) -> aioredis.Redis:
    """A client for a redis://, rediss:// or unix:// URL."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"unsupported Redis URL scheme {scheme!r} in {redact(url)}")
    try:
        return aioredis.Redis.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=timeout,
            health_check_interval=0,
            client_name=name,
        )
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {redact(url)}: {exc}") from exc


@contextlib.contextmanager
def translating(what: str):
    """Turn redis' connection errors into StoreUnavailable(what)."""
    try:
        yield
    except REDIS_DOWN as exc:
        raise StoreUnavailable(f"{what}: {exc.__class__.__name__}: {exc}") from exc


async def aclose(client: aioredis.Redis) -> None:
    with contextlib.suppress(Exception):
        await client.aclose()


@contextlib.asynccontextmanager
async def redis_client(url: str, **kwargs) -> AsyncIterator[aioredis.Redis]:
    client = connect(url, **kwargs)
    try:
        yield client
    finally:
        await aclose(client)
