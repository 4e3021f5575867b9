"""Every command checks every flag at startup: one line naming the flag, exit code 2, no traceback.
And ``--help`` tells the truth: defaults once, none for required flags, the variable of every flag
that has one (including each XDS_* variable the Fly tomls set)."""
from __future__ import annotations

import argparse

import os
import re
import subprocess
import tomllib

import pytest

from discoverer import config as discoverer_config
from harness.procs import REPO, script
from xds_server import config as xds_config
from xdsctl.main import parser as xdsctl_parser

PARSERS = {"discoverer": discoverer_config.parser, "xds-server": xds_config.parser, "xdsctl": xdsctl_parser}


def run(command: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(script(command)), *args], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)


BAD = [
    ("xds-server", ["--listen", "nonsense"], "--listen: wants HOST:PORT"),
    ("xds-server", ["--listener-port", "99999"], "--listener-port: wants a port 1-65535 (got '99999')"),
    ("xds-server", ["--listener-address", "anywhere"], "--listener-address: wants an IP address"),
    ("xds-server", ["--tls-cert", "/no/such.pem", "--tls-key", "/no/such.key"], "--tls-cert: wants a readable file"),
    ("xds-server", ["--on-demand-wait", "-1"], "--on-demand-wait: wants seconds > 0"),
    ("xds-server", ["--accept-reset-after", "soon"], "--accept-reset-after: wants seconds > 0"),
    ("xds-server", ["--max-streams", "0"], "--max-streams: wants an integer >= 1"),
    ("xds-server", ["--metrics-listen", "host:"], "--metrics-listen: wants [HOST:]PORT"),
    ("xds-server", ["--log-level", "loud"], "--log-level: wants one of debug, info, warning, error"),
    ("xds-server", ["--redis-read-url", "http://replica"], "--redis-read-url: unsupported Redis URL scheme"),
    ("discoverer", ["--dns-server", "dns.internal:53"], "--dns-server: wants IP, IP:PORT or [IPv6]:PORT"),
    ("discoverer", ["--builder-port", "70000"], "--builder-port: wants a port 1-65535 (got '70000')"),
    ("discoverer", ["--poll-interval", "0"], "--poll-interval: wants seconds > 0 (got '0')"),
    ("discoverer", ["--lease-ttl", "0.3"], "--lease-ttl: wants seconds > 0.4 (got '0.3')"),
    ("discoverer", ["--mass-removal-share", "2"], "--mass-removal-share: wants a share > 0 and <= 1"),
    ("discoverer", ["--mass-deregistration-share", "0"], "--mass-deregistration-share: wants a share > 0 and <= 1"),
    ("discoverer", ["--max-unconfirmed", "0"], "--max-unconfirmed: "),
    ("discoverer", ["--source", "file", "--file", "/no/such.json"], "--file: wants a readable file"),
    ("discoverer", ["--prefix", "xds"], "--prefix: wants a prefix with a non-empty hash tag"),
    ("discoverer", ["--sni-template", "builders.internal"], "--sni-template: wants a template like"),
    ("xdsctl", ["bootstrap", "--node-id", "e", "--ads", "nothost"], "--ads: wants HOST:PORT[,HOST:PORT...]"),
    ("xdsctl", ["bootstrap", "--node-id", "e", "--listener-port", "99999"], "--listener-port: wants a port 1-65535"),
    ("xdsctl", ["bootstrap", "--node-id", "e", "--admin-port", "0"], "--admin-port: wants a port 1-65535"),
    ("xdsctl", ["bootstrap"], "--node-id: required"),
    ("xdsctl", ["changes", "--count", "-3"], "--count: wants an integer >= 1"),
    ("xdsctl", ["routes", "--prefix", "nohashtag"], "--prefix: wants a prefix with a non-empty hash tag"),
    ("xdsctl", ["--redis-url", "redis+cluster://h:7000/3", "routes"], "--redis-url: "),
]


@pytest.mark.parametrize("command, argv, message", BAD, ids=[f"{c} {' '.join(a)}" for c, a, _ in BAD])
def test_a_bad_flag_is_one_line_and_exit_code_2(command, argv, message):
    out = run(command, *argv)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), out.stderr


def test_a_bad_environment_variable_is_named():
    out = run("xds-server", env={**os.environ, "XDS_LISTENER_PORT": "https"})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == "error: --listener-port (from env XDS_LISTENER_PORT): wants a port 1-65535 (got 'https')"


def subparser(name: str, sub: str | None = None):
    p = PARSERS[name]()
    return next(a for a in p._actions if a.dest == "command").choices[sub] if sub else p


def help_text(name: str, sub: str | None = None) -> str:
    return " ".join(subparser(name, sub).format_help().split())


@pytest.mark.parametrize("name, sub", [("discoverer", None), ("xds-server", None), ("xdsctl", None),
                                       ("xdsctl", "bootstrap"), ("xdsctl", "changes"), ("xdsctl", "routes")])
def test_help_shows_each_default_once_and_only_when_it_means_something(name, sub):
    p = subparser(name, sub)
    for action in p._actions:
        text = p._get_formatter()._expand_help(action) if action.help else ""
        assert text.count("default") <= 1, f"{action.option_strings}: {text}"
        assert not any(f"default: {x})" in text or f"default: {x};" in text for x in ("None", "False", "")), text
        if action.required:
            assert "default" not in text, f"required {action.option_strings} shows a default"


def fly_env() -> list[tuple[str, str, str]]:
    """(command, variable, value) for every XDS_* variable a Fly toml sets."""
    out = []
    for toml in sorted((REPO / "deploy" / "fly").glob("*.toml")):
        data = tomllib.loads(toml.read_text())
        commands = {c.split()[0] for c in data.get("processes", {}).values()}
        for command in commands & set(PARSERS):
            out += [(command, k, v) for k, v in data.get("env", {}).items() if k.startswith("XDS_")]
    return out


@pytest.mark.parametrize("command, variable, value", fly_env())
def test_every_variable_the_fly_tomls_set_is_read_and_named_in_help(monkeypatch, command, variable, value):
    named = re.compile(rf"\benv {variable}\b")
    assert named.search(help_text(command)), f"{command} --help does not name {variable}"
    monkeypatch.setenv(variable, value)
    actions = [a for a in PARSERS[command]()._actions if named.search(a.help or "")]
    assert len(actions) == 1
    if actions[0].default is None and actions[0].nargs is None and isinstance(actions[0], argparse._AppendAction):
        # a repeatable flag: its comma-separated variable is read when the config is built
        from discoverer.config import from_args
        assert value.lower() in from_args([]).rules.apps, f"{variable}={value!r} was not read"
        return
    parsed = getattr(PARSERS[command]().parse_args([]), actions[0].dest)
    converted = actions[0].type(value) if actions[0].type else value
    assert parsed == converted, f"{variable}={value!r} gave {actions[0].dest}={parsed!r}"


def test_the_fly_tomls_set_variables_at_all():
    assert {c for c, _, _ in fly_env()} == {"discoverer", "xds-server"}, "the parse of deploy/fly/*.toml broke"

