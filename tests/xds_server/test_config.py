"""xds-server flags: the Redis read URL."""
from __future__ import annotations

import pytest

from shared.errors import ConfigError
from xds_server import config


def test_the_read_url_defaults_to_none_and_comes_from_flag_or_environment(monkeypatch):
    monkeypatch.delenv("XDS_REDIS_READ_URL", raising=False)
    assert config.from_args([]).redis_read_url is None
    cfg = config.from_args(["--redis-url", "redis+sentinel://s1:26379/xds",
                            "--redis-read-url", "redis://replica:6379/0"])
    assert cfg.redis.url == "redis+sentinel://s1:26379/xds" and cfg.redis_read_url == "redis://replica:6379/0"
    monkeypatch.setenv("XDS_REDIS_READ_URL", "redis+sentinel://s1:26379/xds?role=replica")
    assert config.from_args([]).redis_read_url == "redis+sentinel://s1:26379/xds?role=replica"


def test_a_bad_read_url_is_a_config_error():
    with pytest.raises(ConfigError, match="MASTERNAME"):
        config.from_args(["--redis-read-url", "redis+sentinel://s1:26379"])


def test_a_bad_redis_url_is_exit_code_2(capsys):
    from xds_server.main import main

    assert main(["--redis-url", "redis+cluster://h:7000/5", "--listen", "127.0.0.1:0"]) == 2
    assert "only database 0" in capsys.readouterr().err
