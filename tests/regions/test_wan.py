"""harness/wan.py, the user-space WAN: a chunk crosses a set one-way delay each way, in order;
a cut holds data with the connection open and a heal delivers it. On loopback, with an echo
server, the relay as its own process (``python -m harness.wan``)."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from harness.procs import Proc, free_port
from harness.wan import WanControl

pytestmark = pytest.mark.timeout(60)
ONE_WAY_MS = 50


@pytest.fixture
def relay(tmp_path):
    echo = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_echo, args=(echo,), daemon=True).start()
    port = free_port()
    spec = {"paths": [{"a": "ord", "b": "ams", "one_way_ms": ONE_WAY_MS,
                       "endpoints": [["127.0.0.1", port, "127.0.0.1", echo.getsockname()[1]]]}]}
    (tmp_path / "wan.json").write_text(json.dumps(spec))
    proc = Proc.start_python(["-m", "harness.wan", tmp_path / "wan.json", tmp_path / "wan.sock"], tmp_path,
                             label="wan")
    try:
        proc.wait_for_log("wan relay ready", 10)
        yield port, WanControl(str(tmp_path / "wan.sock"))
    finally:
        proc.stop()
        echo.close()


def _echo(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        threading.Thread(target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(65536), b"")],
                         daemon=True).start()


def round_trip(sock: socket.socket, data: bytes) -> float:
    started = time.monotonic()
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        got += sock.recv(65536)
    assert got == data
    return time.monotonic() - started


def test_a_path_delays_each_way_and_a_cut_holds_until_the_heal(relay):
    port, wan = relay
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        first = round_trip(sock, b"hello")  # the handshake's round trip comes with the first bytes
        rtts = [round_trip(sock, f"ping {n}".encode()) for n in range(5)]
        assert first >= 4 * ONE_WAY_MS / 1000
        assert all(2 * ONE_WAY_MS / 1000 <= r < 2 * ONE_WAY_MS / 1000 + 0.1 for r in rtts), rtts
        wan.cut("ord", "ams")
        sock.sendall(b"held")
        sock.settimeout(3 * ONE_WAY_MS / 1000 + 0.5)
        with pytest.raises(TimeoutError):  # held past several round trips, the connection still open
            sock.recv(16)
        assert [p["cut"] for p in wan.stats()] == [True]
        healed = time.monotonic()
        wan.heal("ord", "ams")
        sock.settimeout(5)
        assert sock.recv(16) == b"held"
        assert time.monotonic() - healed >= 2 * ONE_WAY_MS / 1000 * 0.9
    with pytest.raises(ValueError):
        wan.cut("ord", "nowhere")
