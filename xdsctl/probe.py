"""What a TLS client got through an Envoy for one SNI: a builder answered, or how it did not.

``hello`` sends a real ClientHello (Python's TLS stack, nothing verified) and
reads the first bytes back. Envoy never terminates builder TLS, so any TLS
record that comes back (a ServerHello, or an alert about the client's missing
certificate) was written by the builder: the SNI routed. Envoy with no route
for the name closes the connection: refused. The same ``NotRouted`` verdicts
serve the end-to-end tests' clients (harness/envoy.py), so a check for
"refused" is never passed by an Envoy that was only slow to answer.
"""
from __future__ import annotations

import enum
import socket
import ssl

HANDSHAKE, ALERT = 0x16, 0x15  # TLS record content types


class NotRouted(str, enum.Enum):
    """What a connection through Envoy got instead of a builder. Each is falsy, so ``if reach(...)``
    reads "routed"; a check that means refused asks for REFUSED."""

    REFUSED = "refused"  # Envoy closed or reset the connection: no route for that name
    TIMED_OUT = "timed out"  # no answer within the timeout: a slow Envoy, or one holding the connection
    DOWN = "down"  # nothing listens on the port
    WRONG = "wrong"  # something answered, but not a builder with that name (certificate, greeting, not TLS)

    def __bool__(self) -> bool:
        return False


REFUSED, TIMED_OUT, DOWN, WRONG = NotRouted.REFUSED, NotRouted.TIMED_OUT, NotRouted.DOWN, NotRouted.WRONG


def client_hello(sni: str) -> bytes:
    """The bytes of a TLS ClientHello that names ``sni``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def connect(host: str, port: int, timeout: float) -> socket.socket | NotRouted:
    """A TCP connection to ``host:port``, or TIMED_OUT / DOWN."""
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        return TIMED_OUT
    except OSError:
        return DOWN


def hello(host: str, port: int, sni: str, *, timeout: float = 2.0) -> str | NotRouted:
    """Send a ClientHello for ``sni`` to ``host:port``: "ServerHello" or "alert" when a TLS server
    answered through it, else why not."""
    sock = connect(host, port, timeout)
    if isinstance(sock, NotRouted):
        return sock
    with sock:
        try:
            sock.sendall(client_hello(sni))
            first = sock.recv(5)
        except TimeoutError:
            return TIMED_OUT
        except OSError:  # reset
            return REFUSED
    if not first:
        return REFUSED
    return {HANDSHAKE: "ServerHello", ALERT: "alert"}.get(first[0], WRONG)
