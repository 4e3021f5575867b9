"""Fixtures that start real servers on loopback (from ``harness/``), each bounded in time.

- ``redis_server``: a fresh redis-server (persistence off) on a free port,
  with ``.url``, ``.port``, ``.client()``, ``.restart(keep_data=...)``,
  ``.stop()``, ``.start()``, ``.pause()``/``.resume()``; killed at teardown.
- ``store``: a ``shared.store.Store`` on that server (async client).
- ``dns_server``: tools/dns_server.py as a subprocess with ``.addr``,
  ``.set_builders([...])``, ``.set_mode(mode)``, ``.stop()``, ``.start()``.
- ``procs``: a ProcGroup to start our console scripts; all stopped at
  teardown, their logs printed when the test failed.

Helpers to import: ``from harness.wait import wait_until``, ``from harness.procs import Proc``,
``from harness.plane import Plane`` (a whole system).
"""
from __future__ import annotations

import os

# Our fixtures fork children (preexec_fn) while gRPC threads run in this process;
# gRPC's fork handlers then abort about one child in fifty (SIGABRT before exec),
# and the fixture waits out its 5 s start timeout. The children exec at once and
# never use gRPC, so its fork support is off for the tests (before grpc loads).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import pytest

from harness.dns import DnsProcess
from harness.procs import ProcGroup, free_port, wait_until  # noqa: F401 - re-exported for tests
from harness.redis import start_redis
from shared.connect import aclose, connect
from shared.keys import Keys
from shared.store import Store


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture
def redis_server(tmp_path):
    server = start_redis(tmp_path / "redis")
    server.flush()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def store(redis_server):
    client = connect(redis_server.url, name="tests")
    try:
        yield Store(client, Keys())
    finally:
        await aclose(client)


@pytest.fixture
def dns_server(tmp_path, request):
    server = DnsProcess(tmp_path / "dns")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if _failed(request) and server.proc is None:
            log = (server.dir / "dns.log")
            if log.exists():
                print("----- dns -----\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))


@pytest.fixture
def procs(tmp_path, request):
    group = ProcGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()
        if _failed(request):
            print(group.logs())
