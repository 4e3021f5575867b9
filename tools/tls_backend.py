"""Stand-in builders: TLS servers that say who they are, and the certs they need.

Each backend presents a certificate for its name (CN and DNS SAN), sends
``builder=<name>\\n`` as soon as the handshake is done, then echoes every
byte it receives until the client closes. A client that connects through
Envoy with SNI ``<name>`` and reads the first line knows which builder it
reached. Certificates are issued by one test CA (``ca.pem``) so a client can
verify them; with ``client_ca`` the backend also demands a client certificate
from that CA (mTLS end to end, as in production).

CLI::

    python tools/tls_backend.py --cert-dir DIR --backend NAME=HOST:PORT [--backend ...]
                                [--port-file F] [--mtls]

generates missing certs into DIR, prints one line ``NAME HOST PORT`` per
backend once all listen (PORT 0 picks a free port; with --port-file, the same
lines go to F atomically), then serves until SIGTERM/SIGINT. Importable::

    certs = ensure_certs(dir, "abc.builders.internal")          # CertPaths
    backend = await start_tls_backend("127.0.0.2", 0, "abc.builders.internal", dir)
    backend.port; ...; await backend.close()
    ctx = client_context(dir)   # an ssl.SSLContext that trusts the test CA
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if __package__ in (None, ""):  # run as a script (python tools/x.py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools import cli  # noqa: E402

log = logging.getLogger("tls_backend")

CA_NAME = "flyxds test CA"
CLIENT_NAME = "client"


@dataclass(frozen=True)
class CertPaths:
    cert: Path
    key: Path
    ca: Path


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    os.replace(tmp, path)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return builder.not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))


def ensure_ca(directory: str | os.PathLike) -> tuple[Path, Path]:
    """The test CA (ca.pem, ca.key) in ``directory``, created when missing."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = d / "ca.pem", d / "ca.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name(CA_NAME)).issuer_name(_name(CA_NAME))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def ensure_certs(directory: str | os.PathLike, name: str, *, client: bool = False) -> CertPaths:
    """A cert for ``name`` (CN and DNS SAN) signed by the test CA, created when missing."""
    d = Path(directory)
    ca_cert_path, ca_key_path = ensure_ca(d)
    cert_path, key_path = d / f"{name}.pem", d / f"{name}.key"
    if cert_path.exists() and key_path.exists():
        return CertPaths(cert_path, key_path, ca_cert_path)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name(name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return CertPaths(cert_path, key_path, ca_cert_path)


def server_context(directory: str | os.PathLike, name: str, *, mtls: bool = False) -> ssl.SSLContext:
    certs = ensure_certs(directory, name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certs.cert, certs.key)
    if mtls:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(certs.ca)
    return ctx


def client_context(directory: str | os.PathLike, *, with_client_cert: bool = False) -> ssl.SSLContext:
    """Trusts the test CA and checks the server name; optionally presents a client cert."""
    ca, _ = ensure_ca(directory)
    ctx = ssl.create_default_context(cafile=str(ca))
    if with_client_cert:
        certs = ensure_certs(directory, CLIENT_NAME, client=True)
        ctx.load_cert_chain(certs.cert, certs.key)
    return ctx


class TlsBackend:
    """One listening backend; ``close()`` is safe to call twice."""

    def __init__(self, name: str, server: asyncio.Server):
        self.name = name
        self.server = server
        sock = server.sockets[0].getsockname()
        self.host, self.port = sock[0], sock[1]
        self.connections = 0
        self._handlers: set[asyncio.Task] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            writer.write(f"builder={self.name}\n".encode())
            await writer.drain()
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # close(): the connection ends here (a cancelled handler makes asyncio log noise)
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    async def close(self) -> None:
        self.server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=2)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.server.wait_closed()


async def start_tls_backend(host: str, port: int, name: str, cert_dir: str | os.PathLike,
                            *, mtls: bool = False) -> TlsBackend:
    """Listen on host:port (0: a free port) as builder ``name``."""
    ctx = server_context(cert_dir, name, mtls=mtls)
    holder: list[TlsBackend] = []

    async def handle(reader, writer):
        await holder[0]._handle(reader, writer)

    server = await asyncio.start_server(handle, host, port, ssl=ctx, reuse_address=True,
                                        ssl_handshake_timeout=5)
    holder.append(TlsBackend(name, server))
    return holder[0]


def parse_backend(value: str) -> tuple[str, str, int]:
    """'NAME=HOST:PORT' or 'NAME=[v6]:PORT'."""
    name, sep, addr = value.partition("=")
    host, sep2, port = addr.rpartition(":")
    if not (sep and sep2 and name):
        raise ValueError(f"--backend needs NAME=HOST:PORT, not {value!r}")
    return name, host.strip("[]"), int(port)


async def _main(args: argparse.Namespace) -> None:
    specs = [parse_backend(v) for v in args.backend]
    if args.name:
        host, _, port = args.listen.rpartition(":")
        specs.append((args.name, host.strip("[]"), int(port)))
    if not specs:
        raise SystemExit("nothing to serve: give --backend NAME=HOST:PORT (or --listen and --name)")
    backends = [await start_tls_backend(h, p, n, args.cert_dir, mtls=args.mtls) for n, h, p in specs]
    lines = "".join(f"{b.name} {b.host} {b.port}\n" for b in backends)
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        Path(tmp).write_text(lines)
        os.replace(tmp, args.port_file)
    sys.stdout.write(lines)
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for b in backends:
        await b.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="TLS stand-in builders that answer 'builder=<name>' then echo")
    p.add_argument("--cert-dir", required=True, help="where the test CA and certs live (created when missing)")
    p.add_argument("--backend", action="append", default=[], help="NAME=HOST:PORT (repeatable)")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT for the single --name form")
    p.add_argument("--name", help="the builder's TLS name (single-backend form)")
    p.add_argument("--mtls", action="store_true", help="require a client cert signed by the test CA")
    p.add_argument("--port-file", help="also write the 'NAME HOST PORT' lines to this file")
    return cli.run(p, _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
