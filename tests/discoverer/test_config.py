"""discoverer.config: flags and environment into one frozen config."""
from __future__ import annotations

import pytest

from discoverer.config import from_args
from harness.procs import Proc
from shared.errors import ConfigError


def test_defaults():
    cfg = from_args(["--app", "builders"])
    assert (cfg.source, cfg.timing.interval, cfg.lease.ttl, cfg.rules.port) == ("fly", 0.1, 2.0, 443)
    assert cfg.rules.apps == frozenset({"builders"}) and len(cfg.rules.allowed) == 3


def test_the_fly_source_needs_the_builder_apps(monkeypatch, tmp_path):
    monkeypatch.delenv("XDS_APPS", raising=False)
    for argv in ([], ["--source", "fly"], ["--app", " "]):
        with pytest.raises(ConfigError, match="--app"):
            from_args(argv)
    source_file = tmp_path / "b.json"
    source_file.write_text("[]")
    assert from_args(["--source", "file", "--file", str(source_file)]).rules.apps == frozenset(), \
        "a file lists its builders itself"
    monkeypatch.setenv("XDS_APPS", "builders")
    assert from_args([]).rules.apps == frozenset({"builders"})


def test_flags_and_environment(monkeypatch):
    monkeypatch.setenv("XDS_APPS", "builder, Other")
    cfg = from_args(["--dns-server", "[::1]:5353", "--allow-cidr", "10.0.0.0/8", "--id", "d1"])
    assert cfg.rules.apps == frozenset({"builder", "other"})
    assert [str(n) for n in cfg.rules.allowed] == ["10.0.0.0/8"] and cfg.holder == "d1"
    assert from_args(["--app", "web"]).rules.apps == frozenset({"web"})


def test_the_intent_caps_come_from_flags_or_the_environment(monkeypatch):
    rules = from_args(["--app", "web"]).rules
    assert (rules.max_unconfirmed, rules.mass_deregistration_share) == (64, 0.25)
    monkeypatch.setenv("XDS_MAX_UNCONFIRMED", "5")
    monkeypatch.setenv("XDS_MASS_DEREGISTRATION_SHARE", "0.5")
    rules = from_args(["--app", "web"]).rules
    assert (rules.max_unconfirmed, rules.mass_deregistration_share) == (5, 0.5)
    assert from_args(["--app", "web", "--max-unconfirmed", "7"]).rules.max_unconfirmed == 7


@pytest.mark.parametrize("argv", [
    ["--source", "file"],
    ["--dns-server", "dns.internal:53", "--app", "builders"],
    ["--lease-ttl", "0.2"],
    ["--poll-interval", "0"],
    ["--sni-template", "builders.internal"],
    ["--allow-cidr", "not-a-cidr"],
])
def test_bad_flags_are_config_errors(argv):
    with pytest.raises(ConfigError):
        from_args(argv)


def test_the_redis_password_never_shows(monkeypatch):
    cfg = from_args(["--redis-url", "redis://:hunter2@127.0.0.1:6379/0", "--app", "builders"])
    assert "hunter2" not in repr(cfg) and "hunter2" not in repr(cfg.redis)


def test_the_process_exits_2_on_a_config_error(tmp_path):
    proc = Proc.start("discoverer", ["--dns-server", "nope:53", "--app", "builders"], tmp_path)
    assert proc.wait(15) == 2
    assert "nope:53" in proc.log()


def test_the_fly_source_without_apps_exits_2_with_one_line_naming_the_flag(tmp_path):
    proc = Proc.start("discoverer", ["--source", "fly", "--dns-server", "127.0.0.1:53"], tmp_path,
                      env={"XDS_APPS": ""})
    assert proc.wait(15) == 2
    lines = proc.log().strip().splitlines()
    assert len(lines) == 1 and "--app" in lines[0], lines
