"""Redis connections from URLs, and the boundary where redis errors are translated.

URL forms (``connect`` and ``redis_client`` take any of them):

- ``redis://[user:pass@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path.sock?db=0``:
  one Redis node, as redis-py reads them.
- ``redis+sentinel://[user:pass@]host:port[,host:port...]/MASTERNAME[/db][?options]``:
  the sentinels to ask (default port 26379) and the name of the monitored
  master. ``user:pass`` authenticates to the Redis data nodes; the sentinels
  are asked without credentials unless ``sentinel_username`` /
  ``sentinel_password`` are given. ``role=replica`` connects to a replica the
  sentinels name instead of the master (for ``xds-server --redis-read-url``).
- ``redis+cluster://[user:pass@]host:port[,host:port...][?options]``: seed
  nodes of a Redis Cluster (default port 6379); the client learns the rest
  from CLUSTER SLOTS and follows MOVED/ASK. Database 0 only.
- ``rediss+sentinel://`` and ``rediss+cluster://``: the same over TLS (to the
  sentinels too).

TLS options, as query parameters of any ``rediss`` form: ``ssl_ca_certs``,
``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` (none, optional,
required), ``ssl_check_hostname`` (true/false).
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, TypeVar, Union

import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.asyncio.sentinel as aiosentinel
import redis.exceptions as rex
from redis.maint_notifications import MaintNotificationsConfig

from .addr import parse_hostport
from .errors import ConfigError, StoreMisuse, StoreUnavailable

T = TypeVar("T")

Client = Union[aioredis.Redis, aiocluster.RedisCluster]

# Redis cannot be reached, or is between masters (MasterNotFoundError and LOADING are ConnectionErrors).
REDIS_DOWN = (rex.ConnectionError, rex.TimeoutError, OSError)
# Refusals that a failover or a resharding causes and that go away by themselves: retried like an outage.
TRANSIENT = (rex.ReadOnlyError, rex.AskError, rex.TryAgainError, rex.ClusterError, rex.SlotNotCoveredError)
# UNBLOCKED: a blocked XREAD is released when its Redis turns from master into replica.
TRANSIENT_CODES = ("READONLY", "MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN", "NOREPLICAS",
                   "UNBLOCKED", "BUSY")
TRANSIENT_WORDS = re.compile(r"(?:^|[\s-])(?:" + "|".join(TRANSIENT_CODES) + r")\b")

SINGLE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = SINGLE_SCHEMES + SENTINEL_SCHEMES + CLUSTER_SCHEMES
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
SECRET_OPTIONS = ("password", "sentinel_password")


def redact(url: str) -> str:
    """The URL with any password (in the user part or the query) replaced, safe to log."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{netloc}")
    if parts.query:
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if any(k in SECRET_OPTIONS for k, _ in query):
            masked = [(k, "***" if k in SECRET_OPTIONS else v) for k, v in query]
            parts = parts._replace(query=urllib.parse.urlencode(masked, safe="*/"))
    return urllib.parse.urlunsplit(parts)


@dataclass(frozen=True)
class RedisUrl:
    """A parsed URL: what ``connect`` builds a client from."""

    topology: str  # "single" | "sentinel" | "cluster"
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None
    db: int = 0
    master: str = ""
    role: str = "master"
    options: dict = field(default_factory=dict)  # TLS options, sentinel credentials

    @property
    def read_only(self) -> bool:
        return self.role == "replica"


def _hosts(netloc: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    out = []
    for item in netloc.rpartition("@")[2].split(","):
        item = item.strip()
        if not item:
            raise ConfigError(f"empty host in {redact(url)}")
        try:
            out.append(parse_hostport(item, default_port=default_port))
        except ValueError as exc:
            raise ConfigError(f"bad host {item!r} in {redact(url)}: wants {exc}") from None
    return tuple(out)


def _bool(value: str, name: str) -> bool:
    v = value.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean")


def parse_url(url: str) -> RedisUrl:
    """Check a URL and split it; a ConfigError names what is wrong (with the password hidden)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {redact(url)}: {exc}") from exc
    scheme = parts.scheme
    if scheme not in SCHEMES:
        raise ConfigError(f"unsupported Redis URL scheme {scheme!r} in {redact(url)}; expected one of "
                          + ", ".join(f"{s}://" for s in SCHEMES))
    if scheme in SINGLE_SCHEMES:
        return RedisUrl("single", tls=scheme == "rediss")
    tls = scheme.startswith("rediss")
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    allowed = set(TLS_OPTIONS if tls else ())
    unquote = urllib.parse.unquote
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if scheme in SENTINEL_SCHEMES:
        allowed |= {"sentinel_username", "sentinel_password", "role"}
        segments = [s for s in parts.path.split("/") if s]
        if not segments or len(segments) > 2:
            raise ConfigError(f"{redact(url)}: expected {scheme}://host:port[,host:port...]/MASTERNAME[/db]")
        try:
            db = int(segments[1]) if len(segments) == 2 else 0
        except ValueError:
            raise ConfigError(f"bad database number {segments[1]!r} in {redact(url)}") from None
        role = query.get("role", "master")
        if role not in ("master", "replica"):
            raise ConfigError(f"role={role!r} in {redact(url)}: expected master or replica")
        topology, master, hosts = "sentinel", unquote(segments[0]), _hosts(parts.netloc, 26379, url)
    else:
        if parts.path not in ("", "/", "/0"):
            raise ConfigError(f"{redact(url)}: Redis Cluster has only database 0")
        topology, master, db, role, hosts = "cluster", "", 0, "master", _hosts(parts.netloc, 6379, url)
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} in {redact(url)}")
    options: dict = {}
    for name in TLS_OPTIONS:
        if name in query:
            options[name] = _bool(query[name], name) if name == "ssl_check_hostname" else query[name]
    if "ssl_cert_reqs" in options and options["ssl_cert_reqs"] not in ("none", "optional", "required"):
        raise ConfigError(f"ssl_cert_reqs={options['ssl_cert_reqs']!r}: expected none, optional or required")
    for name in ("sentinel_username", "sentinel_password"):
        if name in query:
            options[name] = query[name]
    return RedisUrl(topology, tls=tls, hosts=hosts, username=username, password=password, db=db,
                    master=master, role=role, options=options)


def connect(url: str, *, timeout: float = 2.0, name: str | None = None, resp3: bool = True) -> Client:
    """A client for any URL form of the module docstring.

    ``resp3=False`` speaks RESP2, whose connections send no HELLO: without a password and a
    ``name`` the first command on a new connection is the caller's, one round trip less for a
    short-lived client across a WAN (``xdsctl register`` from a far region).

    Sentinel and Cluster clients find the current master themselves: after a
    failover the next command goes to the new one (errors in between are
    StoreUnavailable at ``translating``).
    """
    client = _connect(url, parse_url(url), timeout, name, resp3)
    client._flyxds_where = redact(url)  # for log lines: see where()
    return client


def where(client: Client) -> str:
    """'Redis at <the URL it was made from, password hidden>', for log lines."""
    url = getattr(client, "_flyxds_where", None)
    return f"Redis at {url}" if url else "Redis"


# What a new connection sends costs a round trip each: across regions (180 ms) that was six
# before the first command. We keep HELLO (RESP3) and the client name (only when given); we drop
# CLIENT SETINFO (library name and version) and CLIENT MAINT_NOTIFICATIONS (a Redis Enterprise
# feature): two round trips on every connection and every reconnect. Cluster clients keep theirs.
LEAN = dict(driver_info=None, maint_notifications_config=MaintNotificationsConfig(enabled=False))


def _connect(url: str, spec: RedisUrl, timeout: float, name: str | None, resp3: bool) -> Client:
    common = dict(socket_timeout=None, socket_connect_timeout=timeout, health_check_interval=0, client_name=name)
    if not resp3:  # (left unset, redis-py says HELLO 3 and keeps the reply shapes our code reads)
        common["protocol"] = 2
    if spec.topology == "single":
        try:
            return aioredis.Redis.from_url(url, **common, **LEAN)
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL {redact(url)}: {exc}") from exc
    tls = {"ssl": True, **{k: v for k, v in spec.options.items() if k in TLS_OPTIONS}} if spec.tls else {}
    auth = dict(username=spec.username, password=spec.password)
    if spec.topology == "cluster":
        nodes = [aiocluster.ClusterNode(host, port) for host, port in spec.hosts]
        return aiocluster.RedisCluster(startup_nodes=nodes, **auth, **common, **tls)
    sentinel_kwargs = dict(socket_timeout=timeout, socket_connect_timeout=timeout, **tls,
                           username=spec.options.get("sentinel_username"),
                           password=spec.options.get("sentinel_password"))
    sentinel = aiosentinel.Sentinel(list(spec.hosts), sentinel_kwargs=sentinel_kwargs, **tls)
    kwargs = dict(db=spec.db, **auth, **common, **LEAN)
    client = (sentinel.slave_for if spec.read_only else sentinel.master_for)(spec.master, **kwargs)
    client._flyxds_sentinel = sentinel  # closed with the client by aclose()
    return client


def transient(exc: BaseException) -> bool:
    """A refusal that a failover causes (READONLY, MOVED, TRYAGAIN, CLUSTERDOWN, LOADING, ...)."""
    if isinstance(exc, rex.CrossSlotTransactionError):
        return False  # our bug, not Redis' state
    if isinstance(exc, TRANSIENT) or isinstance(exc, rex.RedisClusterException):
        return True
    if isinstance(exc, rex.ResponseError):
        # inside a script Redis words it "... @user_script: 4: -READONLY You can't write ..."
        return TRANSIENT_WORDS.search(str(exc)) is not None
    return False


# Refusals an operator must fix: (metric label, redis-py classes, words Redis uses, what to do). The first
# match wins: a WRONGTYPE or NOPERM inside a script is that, not a broken script. (redis-py strips the
# code from the errors it has a class for: NoPermissionError says "this user has no permissions ...".)
MISUSE = (
    ("WRONGTYPE", (), ("WRONGTYPE",), ""),  # the hint names the key: see wrong_type_hint
    ("NOPERM", (rex.NoPermissionError,), ("NOPERM", "no permissions"),
     "the ACL user of the Redis URL lacks a permission: grant what deploy/redis.acl lists"),
    ("AUTH", (rex.AuthenticationError, rex.AuthorizationError), ("WRONGPASS", "NOAUTH"),
     "Redis refused the credentials of the Redis URL: fix its user and password"),
    ("OOM", (rex.OutOfMemoryError,), ("OOM ", "maxmemory"),
     "Redis is out of memory (maxmemory): raise maxmemory or free memory; flyxds' keys need "
     "maxmemory-policy noeviction"),
    ("MISCONF", (), ("MISCONF",), "Redis refuses writes because it cannot save its snapshot: fix its disk "
                                  "or its persistence settings"),
    ("SCRIPT", (rex.NoScriptError,), ("user_script", "Error running script", "Error in script", "Error compiling"),
     "a flyxds script failed inside Redis: check that Redis is 6.2 or newer and that no other program "
     "writes keys under this --prefix"),
)
OTHER_HINT = "unexpected: check the Redis version (6.2 or newer) and its log"


def wrong_type_hint(keys: tuple[str, ...], key: str | None = None, actual: str = "", expected: str = "") -> str:
    """What to do about a WRONGTYPE: inspect the key, delete it, flyxds rebuilds it."""
    if key is None:
        return (f"one of {', '.join(keys) or 'its keys'} holds another type than flyxds keeps there: find it "
                "with redis-cli TYPE KEY, then delete it (redis-cli DEL KEY); flyxds rebuilds it")
    holds = f"holds a {actual}, not the {expected} flyxds keeps there" if actual and expected \
        else "holds another type than flyxds keeps there"
    return (f"{key} {holds} (written by another program, or by hand?): look at it (redis-cli TYPE '{key}'), "
            f"then delete it (redis-cli DEL '{key}'); flyxds rebuilds it")


def misuse(exc: BaseException, what: str, keys: tuple[str, ...] = ()) -> StoreMisuse:
    """The StoreMisuse for a refusal that is not an outage: its code, the key when Redis named it, the fix."""
    text = " ".join(str(exc).split())[:500] or exc.__class__.__name__
    code, hint = "OTHER", OTHER_HINT
    for label, classes, words, advice in MISUSE:
        if isinstance(exc, classes) or any(w in text for w in words):
            code, hint = label, advice
            break
    key = None
    if code == "WRONGTYPE":
        # a pipeline says "Command # 2 (HGETALL {xds}:builders) of pipeline caused error: WRONGTYPE ...",
        # our scripts "WRONGTYPE {xds}:changes holds a string, not a stream"
        key = max((k for k in keys if k in text), key=len, default=None)
        hint = wrong_type_hint(keys, key)
    return StoreMisuse(code, what, f"{exc.__class__.__name__}: {text}", keys=tuple(keys), key=key, hint=hint)


@contextlib.contextmanager
def translating(what: str, keys: tuple[str, ...] = ()):
    """The one boundary where redis errors become ours.

    Redis cannot be reached, or refuses while it fails over (READONLY, MOVED, LOADING, ...):
    StoreUnavailable, retried like an outage. Any other refusal (WRONGTYPE, a broken script,
    NOPERM, a refused password, OOM, ...): StoreMisuse, naming ``what`` and, when known, which
    of ``keys`` is at fault and what the operator should do.
    """
    try:
        yield
    except (rex.AuthenticationError, rex.AuthorizationError) as exc:  # ConnectionErrors, but no outage
        raise misuse(exc, what, keys) from exc
    except REDIS_DOWN as exc:
        raise StoreUnavailable(f"{what}: {exc.__class__.__name__}: {exc}") from exc
    except (rex.RedisError, rex.RedisClusterException) as exc:
        if not transient(exc):
            raise misuse(exc, what, keys) from exc
        raise StoreUnavailable(f"{what}: Redis refused: {exc.__class__.__name__}: {exc}") from exc


async def bounded(aw: Awaitable[T], seconds: float, what: str) -> T:
    """Await a Redis call for at most ``seconds``; a hang becomes StoreUnavailable.

    A timeout around the call rather than the client's socket_timeout: with
    Python 3.11, redis-py's socket timeouts (asyncio.wait_for) can swallow a
    task's cancellation, and a discoverer told to stop would then never stop.
    Redis' refusals are translated by ``translating``, below.
    """
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError as exc:
        raise StoreUnavailable(f"{what}: no answer from Redis within {seconds:.1f}s") from exc


async def aclose(client: Client) -> None:
    with contextlib.suppress(Exception):
        await client.aclose()
    sentinel = getattr(client, "_flyxds_sentinel", None)
    for s in getattr(sentinel, "sentinels", ()):
        with contextlib.suppress(Exception):
            await s.aclose()


@contextlib.asynccontextmanager
async def redis_client(url: str, **kwargs) -> AsyncIterator[Client]:
    client = connect(url, **kwargs)
    try:
        yield client
    finally:
        await aclose(client)
