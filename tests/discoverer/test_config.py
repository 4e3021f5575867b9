"""discoverer.config: flags and environment into one frozen config."""
from __future__ import annotations

import pytest

from discoverer.config import from_args
from shared.errors import ConfigError
from tests.support.procs import Proc


def test_defaults():
    cfg = from_args([])
    assert (cfg.source, cfg.timing.interval, cfg.lease.ttl, cfg.rules.port) == ("fly", 0.1, 2.0, 443)
    assert cfg.rules.apps == frozenset() and len(cfg.rules.allowed) == 3


def test_flags_and_environment(monkeypatch):
    monkeypatch.setenv("XDS_APPS", "builder, Other")
    cfg = from_args(["--dns-server", "[::1]:5353", "--allow-cidr", "10.0.0.0/8", "--id", "d1"])
    assert cfg.rules.apps == frozenset({"builder", "other"})
    assert [str(n) for n in cfg.rules.allowed] == ["10.0.0.0/8"] and cfg.holder == "d1"
    assert from_args(["--app", "web"]).rules.apps == frozenset({"web"})


@pytest.mark.parametrize("argv", [
    ["--source", "file"],
    ["--dns-server", "dns.internal:53"],
    ["--lease-ttl", "0.2"],
    ["--poll-interval", "0"],
    ["--sni-template", "builders.internal"],
    ["--allow-cidr", "not-a-cidr"],
])
def test_bad_flags_are_config_errors(argv):
    with pytest.raises(ConfigError):
        from_args(argv)


def test_the_redis_password_never_shows(monkeypatch):
    cfg = from_args(["--redis-url", "redis://:hunter2@127.0.0.1:6379/0"])
    assert "hunter2" not in repr(cfg) and "hunter2" not in repr(cfg.redis)


def test_the_process_exits_2_on_a_config_error(tmp_path):
    proc = Proc.start("discoverer", ["--dns-server", "nope:53"], tmp_path)
    assert proc.wait(15) == 2
    assert "nope:53" in proc.log()
