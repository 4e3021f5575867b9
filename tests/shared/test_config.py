"""shared.config: the one HOST:PORT parser, the flag checks and the one-line errors."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import config
from shared.addr import join_hostport, parse_hostport
from shared.config import Parser, flag
from shared.errors import ConfigError


@pytest.mark.parametrize("value, kwargs, expected", [
    ("127.0.0.1:18000", {}, ("127.0.0.1", 18000)),
    ("xds.internal:18000", {}, ("xds.internal", 18000)),
    ("[::]:9100", {}, ("::", 9100)),
    ("[fdaa::3]", {"default_port": 53}, ("fdaa::3", 53)),
    ("10.0.0.1", {"default_port": 53}, ("10.0.0.1", 53)),
    ("9100", {"default_host": "127.0.0.1"}, ("127.0.0.1", 9100)),
    (":9100", {"default_host": "127.0.0.1"}, ("127.0.0.1", 9100)),
    ("h", {"default_port": 6379}, ("h", 6379)),
])
def test_parse_hostport(value, kwargs, expected):
    assert parse_hostport(value, **kwargs) == expected


@pytest.mark.parametrize("value, kwargs, words", [
    ("nonsense", {}, "port is missing"),
    ("h:0", {}, "1-65535"),
    ("h:99999", {}, "1-65535"),
    ("h:port", {}, "1-65535"),
    (":18000", {}, "a host"),
    ("fd00::1:7000", {"default_port": 6379}, "in brackets"),
    ("[::1", {}, "in brackets"),
    ("[::1]x", {}, "in brackets"),
    ("[nothost]:1", {}, "an IP address"),
    ("dns.internal:53", {"ip_only": True}, "an IP address"),
    ("bad host:1", {}, "host name"),
])
def test_parse_hostport_says_what_it_wants(value, kwargs, words):
    with pytest.raises(ValueError, match=words):
        parse_hostport(value, **kwargs)


@given(st.one_of(st.ip_addresses().map(str), st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}",
                                                            fullmatch=True).filter(lambda h: not h.endswith("-"))),
       st.integers(1, 65535))
def test_join_then_parse_is_the_identity(host, port):
    assert parse_hostport(join_hostport(host, port)) == (host, port)


@given(st.text(max_size=30))
def test_parse_hostport_raises_only_value_error(value):
    try:
        host, port = parse_hostport(value)
    except ValueError:
        return
    assert 0 < port < 65536 and host
    if ":" in host:
        ipaddress.ip_address(host)


def parser(**kwargs) -> Parser:
    p = Parser(prog="t")
    flag(p, "--port", env="T_PORT", default=10, type=config.port, help="a port")
    flag(p, "--wait", env="T_WAIT", default=1.0, type=config.seconds, help="seconds")
    flag(p, "--mode", env="T_MODE", default="a", choices=("a", "b"), help="mode")
    flag(p, "--on", env="T_ON", action="store_true", help="switch")
    p.add_argument("--must", required=True)
    return p


@pytest.mark.parametrize("argv, message", [
    (["--must", "x", "--port", "99999"], "--port: wants a port 1-65535 (got '99999')"),
    (["--must", "x", "--wait", "0"], "--wait: wants seconds > 0 (got '0')"),
    (["--must", "x", "--wait", "nan"], "--wait: wants seconds > 0 (got 'nan')"),
    (["--must", "x", "--mode", "c"], "--mode: wants one of a, b (got 'c')"),
    (["--must", "x", "--frob"], "unrecognized arguments: --frob"),
    ([], "--must: required"),
    (["--must"], "--must: expected one argument"),
])
def test_a_bad_flag_is_one_line_naming_it(argv, message):
    with pytest.raises(ConfigError) as info:
        parser().parse_args(argv)
    assert str(info.value) == message


def test_environment_defaults_are_checked_and_used(monkeypatch):
    monkeypatch.setenv("T_PORT", "443")
    monkeypatch.setenv("T_ON", "1")
    args = parser().parse_args(["--must", "x"])
    assert args.port == 443 and args.on is True and args.wait == 1.0
    assert parser().parse_args(["--must", "x", "--port", "80"]).port == 80, "the flag wins over the variable"
    monkeypatch.setenv("T_WAIT", "soon")
    with pytest.raises(ConfigError, match=r"^--wait \(from env T_WAIT\): wants seconds > 0 \(got 'soon'\)$"):
        parser()
    monkeypatch.delenv("T_WAIT")
    monkeypatch.setenv("T_MODE", "z")
    with pytest.raises(ConfigError, match="--mode .from env T_MODE.: wants one of a, b"):
        parser()


def test_help_names_the_default_once_and_the_variable(monkeypatch):
    monkeypatch.setenv("T_PORT", "443")
    text = " ".join(parser().format_help().split())
    assert "a port (default: 10; env T_PORT)" in text, "the built-in default, not the variable's value"
    assert "switch (env T_ON)" in text
    assert "default: None" not in text and "default: False" not in text
    assert text.count("(default:") == 3
