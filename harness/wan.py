"""A WAN between regions in user space: one TCP relay per path, with a set one-way delay.

These kernels have no netem (``tc qdisc add dev lo root netem delay 10ms`` answers
"Specified qdisc kind is unknown"; there is no modprobe), so latency is made here: a
relay accepts in the dialling region, connects in the serving region, and delivers each
chunk ``one_way`` seconds after it arrived, in order, in both directions. A new
connection's first bytes also wait one round trip more (the TCP handshake a real path
would cost: the kernel completes ours at once).

A path can be **cut**: data is held and connections stay open, as in a partition in which
TCP keeps retrying; new connections are accepted and wait. **Healed**, everything held is
delivered (one one-way trip after the heal at the earliest), in order.

Run it as a process (``python -m harness.wan SPEC.json CONTROL.sock``) and drive it by
``WanControl``: one line per command on the control socket (``cut A B``, ``heal A B``,
``rtt A B MS``, ``stats``), one JSON line back. The spec lists the paths::

    {"paths": [{"a": "ord", "b": "syd", "one_way_ms": 90,
                "listen_ns": "fx-syd", "connect_ns": "fx-ord",
                "endpoints": [["fdaa:0:1::2", 6379]]}]}

Each endpoint is an address of the serving region, added (by harness/netns.py) to the
dialling namespace's loopback too: there the relay listens on it, so a process in syd
dials the ord address as it would on Fly and its bytes cross the delayed path. An endpoint
``[listen host, listen port, host, port]`` listens elsewhere (on loopback, without namespaces).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from dataclasses import dataclass, field

from .netns import in_netns

# Fly's round trips between these regions, roughly (ms): the lab's defaults.
DEFAULT_RTT_MS = {("ord", "ams"): 90, ("ord", "syd"): 180, ("ams", "syd"): 250}
CHUNK = 65536


def default_rtt_ms(a: str, b: str) -> float:
    return DEFAULT_RTT_MS.get((a, b)) or DEFAULT_RTT_MS.get((b, a)) or 100.0


@dataclass
class Path:
    """One inter-region path, both directions: its delay and whether it is cut."""

    a: str
    b: str
    one_way: float
    healed: asyncio.Event = field(default_factory=asyncio.Event)
    healed_at: float = 0.0
    connections: int = 0
    held_bytes: int = 0

    def __post_init__(self) -> None:
        self.healed.set()

    def cut(self) -> None:
        self.healed.clear()

    def heal(self) -> None:
        self.healed_at = time.monotonic()
        self.healed.set()

    def due(self, arrived: float) -> float:
        """When a chunk that arrived at ``arrived`` may be delivered (the path being open)."""
        return max(arrived, self.healed_at) + self.one_way


async def _pump(path: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, extra: float) -> None:
    """Deliver what ``reader`` gives to ``writer``, each chunk one way later, in order; EOF passes on."""
    queue: asyncio.Queue = asyncio.Queue()

    async def deliver() -> None:
        first = True
        while True:
            arrived, data = await queue.get()
            while True:
                await path.healed.wait()
                wait = path.due(arrived) + (extra if first else 0.0) - time.monotonic()
                if wait <= 0 and path.healed.is_set():
                    break
                await asyncio.sleep(max(wait, 0.0))
            first = False
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            path.held_bytes -= len(data)
            writer.write(data)
            await writer.drain()

    task = asyncio.ensure_future(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            path.held_bytes += len(data)
            queue.put_nowait((time.monotonic(), data))
            if not data:
                break
        await task
    finally:
        task.cancel()


class Relay:
    """Every path of a spec: listeners in the dialling namespaces, connections made in the serving ones."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.paths: dict[tuple[str, str], Path] = {}
        self.servers: list[asyncio.base_events.Server] = []

    def path(self, a: str, b: str) -> Path:
        p = self.paths.get((a, b)) or self.paths.get((b, a))
        if p is None:
            raise KeyError(f"no path between {a} and {b}")
        return p

    async def start(self) -> None:
        for item in self.spec["paths"]:
            key = (item["a"], item["b"])
            if key not in self.paths and key[::-1] not in self.paths:
                self.paths[key] = Path(item["a"], item["b"], item["one_way_ms"] / 1000)
            path = self.path(*key)
            for endpoint in item["endpoints"]:
                host, port = endpoint[-2:]  # [host, port], or [listen host, listen port, host, port]
                with in_netns(item.get("listen_ns")):
                    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(tuple(endpoint[:2]))
                handler = self._handler(path, host, port, item.get("connect_ns"))
                self.servers.append(await asyncio.start_server(handler, sock=sock))

    def _handler(self, path: Path, host: str, port: int, connect_ns: str | None):
        async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
            path.connections += 1
            try:
                await path.healed.wait()  # a SYN into a partition: no answer until it heals
                await asyncio.sleep(path.one_way)
                with in_netns(connect_ns):
                    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
                    sock.setblocking(False)
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
                s_reader, s_writer = await asyncio.open_connection(sock=sock)
            except OSError:
                c_writer.close()
                path.connections -= 1
                return
            try:
                await asyncio.gather(_pump(path, c_reader, s_writer, path.one_way),  # the handshake's round trip
                                     _pump(path, s_reader, c_writer, 0.0))
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                path.connections -= 1
                for w in (c_writer, s_writer):
                    w.close()

        return handle

    def command(self, line: str) -> dict:
        words = line.split()
        if not words:
            return {"error": "empty command"}
        op, args = words[0], words[1:]
        try:
            if op == "stats":
                return {"paths": [{"a": p.a, "b": p.b, "rtt_ms": p.one_way * 2000, "cut": not p.healed.is_set(),
                                   "connections": p.connections, "held_bytes": p.held_bytes}
                                  for p in self.paths.values()]}
            path = self.path(args[0], args[1])
            if op == "cut":
                path.cut()
            elif op == "heal":
                path.heal()
            elif op == "rtt":
                path.one_way = float(args[2]) / 2000
            else:
                return {"error": f"unknown command {op!r}: cut A B, heal A B, rtt A B MS, stats"}
        except (KeyError, IndexError, ValueError) as exc:
            return {"error": str(exc)}
        return {"ok": True, "at": time.time()}

    async def serve_control(self, path: str) -> asyncio.base_events.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while line := await reader.readline():
                    writer.write(json.dumps(self.command(line.decode())).encode() + b"\n")
                    await writer.drain()
            writer.close()

        return await asyncio.start_unix_server(handle, path=path)


class WanControl:
    """The test's side of the control socket: ``cut``/``heal``/``stats``, synchronously."""

    def __init__(self, path: str):
        self.path = path

    def send(self, line: str) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.path)
            s.sendall(line.encode() + b"\n")
            reply = s.makefile().readline()
        out = json.loads(reply)
        if "error" in out:
            raise ValueError(out["error"])
        return out

    def cut(self, a: str, b: str) -> float:
        """Cut the path; the wall-clock time of the cut."""
        return self.send(f"cut {a} {b}")["at"]

    def heal(self, a: str, b: str) -> float:
        return self.send(f"heal {a} {b}")["at"]

    def stats(self) -> list[dict]:
        return self.send("stats")["paths"]


async def main(spec_file: str, control: str) -> None:
    with open(spec_file) as f:
        relay = Relay(json.load(f))
    await relay.start()
    server = await relay.serve_control(control)
    print(f"wan relay ready: {len(relay.paths)} paths, control {control}", flush=True)
    async with server:
        await asyncio.Event().wait()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m harness.wan SPEC.json CONTROL.sock", file=sys.stderr)
        raise SystemExit(2)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1], sys.argv[2]))
