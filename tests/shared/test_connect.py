"""shared.connect: every URL form, redaction, and the errors a failover causes."""
from __future__ import annotations

import pytest
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.exceptions as rex
from redis.asyncio.sentinel import MasterNotFoundError, SentinelConnectionPool

from shared.connect import aclose, connect, parse_url, redact, translating
from shared.errors import ConfigError, StoreMisuse, StoreUnavailable


def test_single_node_forms_are_redis_py_urls():
    for url in ("redis://127.0.0.1:6379/0", "rediss://u:p@h:6380/1", "unix:///tmp/r.sock?db=2"):
        spec = parse_url(url)
        assert spec.topology == "single"


def test_sentinel_form():
    spec = parse_url("redis+sentinel://app:pw%40x@10.0.0.1:26379,10.0.0.2,[fd00::3]:26380/mymaster/2")
    assert spec.topology == "sentinel" and not spec.tls
    assert spec.hosts == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("fd00::3", 26380))
    assert (spec.username, spec.password, spec.master, spec.db, spec.role) == ("app", "pw@x", "mymaster", 2, "master")
    spec = parse_url("rediss+sentinel://s1:26379/cache?role=replica&ssl_ca_certs=/ca.pem&sentinel_password=sp")
    assert spec.tls and spec.read_only and spec.db == 0 and spec.password is None
    assert spec.options == {"ssl_ca_certs": "/ca.pem", "sentinel_password": "sp"}


def test_cluster_form():
    spec = parse_url("redis+cluster://:pw@n1:7000,n2:7001,n3")
    assert spec.topology == "cluster" and spec.hosts == (("n1", 7000), ("n2", 7001), ("n3", 6379))
    assert spec.password == "pw" and spec.db == 0
    spec = parse_url("rediss+cluster://n1:7000/0?ssl_cert_reqs=none&ssl_check_hostname=false")
    assert spec.tls and spec.options == {"ssl_cert_reqs": "none", "ssl_check_hostname": False}


@pytest.mark.parametrize("url, words", [
    ("http://h:1", "unsupported Redis URL scheme"),
    ("redis+sentinel://h:26379", "MASTERNAME"),
    ("redis+sentinel://h:26379/a/b/c", "MASTERNAME"),
    ("redis+sentinel://h:26379/m/x", "bad database number"),
    ("redis+sentinel://h:26379/m?role=leader", "role="),
    ("redis+cluster://h:7000/3", "only database 0"),
    ("redis+cluster://h:7000,,h2:7001", "empty host"),
    ("redis+cluster://h:port", "a port 1-65535"),
    ("redis+cluster://fd00::1:7000", "in brackets"),
    ("redis+cluster://h:7000?ssl_ca_certs=/ca", "unknown option"),  # TLS options need rediss+
    ("redis+cluster://h:7000?foo=1", "unknown option"),
    ("rediss+cluster://h:7000?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
    ("rediss+cluster://h:7000?ssl_check_hostname=perhaps", "not a boolean"),
])
def test_bad_urls_are_config_errors(url, words):
    with pytest.raises(ConfigError, match=words):
        parse_url(url)


def test_passwords_never_reach_an_error_message():
    with pytest.raises(ConfigError) as info:
        parse_url("redis+sentinel://u:hunter2@h:26379/m?sentinel_password=s3cret&role=x")
    assert "hunter2" not in str(info.value) and "s3cret" not in str(info.value)


def test_redact_hides_passwords_in_the_user_part_and_the_query():
    assert redact("redis+cluster://u:pw@a:1,b:2") == "redis+cluster://u:***@a:1,b:2"
    assert redact("redis+sentinel://a:1/m?sentinel_password=x&role=replica") == \
        "redis+sentinel://a:1/m?sentinel_password=***&role=replica"
    assert redact("redis+sentinel://a:1/m?role=replica") == "redis+sentinel://a:1/m?role=replica"


async def test_connect_builds_the_client_of_each_form():
    single = connect("redis://127.0.0.1:1/0")
    assert type(single) is aioredis.Redis
    cluster = connect("redis+cluster://127.0.0.1:1,127.0.0.1:2", name="t")
    assert isinstance(cluster, aiocluster.RedisCluster)
    sentinel = connect("redis+sentinel://127.0.0.1:1/mymaster/3")
    assert isinstance(sentinel.connection_pool, SentinelConnectionPool)
    assert sentinel.connection_pool.is_master and sentinel.connection_pool.connection_kwargs["db"] == 3
    replica = connect("redis+sentinel://127.0.0.1:1/mymaster?role=replica")
    assert not replica.connection_pool.is_master
    for c in (single, cluster, sentinel, replica):
        await aclose(c)


async def test_unreachable_sentinels_are_store_unavailable():
    client = connect("redis+sentinel://127.0.0.1:1/mymaster", timeout=0.5)
    with pytest.raises(StoreUnavailable, match="MasterNotFoundError"):
        with translating("reading"):
            await client.get("k")
    await aclose(client)


@pytest.mark.parametrize("exc", [
    rex.ReadOnlyError("You can't write against a read only replica."),
    rex.MovedError("3999 127.0.0.1:6381"),
    rex.AskError("3999 127.0.0.1:6381"),
    rex.TryAgainError("Multiple keys request during rehashing of slot"),
    rex.ClusterDownError("The cluster is down"),
    rex.MasterDownError("Link with MASTER is down"),
    rex.SlotNotCoveredError("slot 12 not covered"),
    rex.RedisClusterException("Redis Cluster cannot be connected"),
    rex.BusyLoadingError("Redis is loading the dataset in memory"),
    MasterNotFoundError("No master found for 'mymaster'"),
    rex.ResponseError("LOADING Redis is loading the dataset in memory"),
    rex.ResponseError("NOREPLICAS Not enough good replicas to write."),
    rex.ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)"),
    rex.ResponseError("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT."),
    rex.ResponseError("Error in script: READONLY You can't write against a read only replica. script: abc"),
    rex.ResponseError("Error running script (call to f_f8c9): @user_script:4: @user_script: 4: -READONLY You can't "
                      "write against a read only replica."),  # Redis 6.2's wording
])
def test_the_refusals_of_a_failover_are_store_unavailable(exc):
    with pytest.raises(StoreUnavailable, match="reading"):
        with translating("reading"):
            raise exc


@pytest.mark.parametrize("exc, code", [
    (rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), "WRONGTYPE"),
    (rex.ResponseError("Error running script (call to f_1a2b): @user_script:12: WRONGTYPE Operation against a key "
                       "holding the wrong kind of value"), "WRONGTYPE"),
    (rex.NoPermissionError("this user has no permissions to run the 'eval' command"), "NOPERM"),
    (rex.AuthenticationError("invalid username-password pair or user is disabled."), "AUTH"),
    (rex.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "OOM"),
    (rex.ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist"),
     "MISCONF"),
    (rex.ResponseError("Error running script (call to f_1a2b): @user_script:3: user_script:3: attempt to compare "
                       "nil with number"), "SCRIPT"),
    (rex.CrossSlotTransactionError("All keys involved in a cluster transaction must map to the same slot"), "OTHER"),
])
def test_other_refusals_are_store_misuse_with_a_code_and_a_fix(exc, code):
    with pytest.raises(StoreMisuse) as caught:
        with translating("reading", ("{xds}:builders",)):
            raise exc
    err = caught.value
    assert err.code == code and err.what == "reading" and err.__cause__ is exc
    assert str(err).startswith("reading: Redis refused: ") and err.hint and err.hint in str(err)


def test_a_wrongtype_in_a_pipeline_names_the_key():
    exc = rex.ResponseError("Command # 2 (HGETALL {xds}:builders) of pipeline caused error: WRONGTYPE Operation "
                            "against a key holding the wrong kind of value")
    with pytest.raises(StoreMisuse) as caught:
        with translating("loading", ("{xds}:version", "{xds}:builders")):
            raise exc
    assert caught.value.key == "{xds}:builders"
    assert "redis-cli DEL '{xds}:builders'" in str(caught.value)
