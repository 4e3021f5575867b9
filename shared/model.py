"""The builder record and its validation.

A ``Builder`` is immutable and hashable; two records are equal when every
routing-relevant field is equal (``seen_at``, ``source`` and ``registered_at``
are bookkeeping and ignored), so a diff of two sets is plain dictionary and
equality work.

``source`` says where a builder came from: ``dns`` (listed by the source the
discoverer polls; the reconciling truth) or ``intent`` (registered by its
provisioner through ``{xds}:intents`` and not yet listed by DNS, since
``registered_at``, wall-clock seconds). Both live in the stored JSON, so a new
leader knows from Redis alone which registrations are still unconfirmed.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson

from .errors import RecordError
from .resources import NO_ROUTE_CLUSTER, XDS_CLUSTER

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
APP_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
REGION_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAX_SNI = 253
RESERVED_NAMES = frozenset({XDS_CLUSTER, NO_ROUTE_CLUSTER})  # cluster names no builder SNI may take

SOURCE_DNS, SOURCE_INTENT = "dns", "intent"  # Builder.source

# The SNI of a builder unless --sni-template says otherwise; DEFAULT_DOMAIN is its fixed suffix.
DEFAULT_SNI_TEMPLATE = "{id}.builders.internal"
DEFAULT_DOMAIN = "builders.internal"

# Fly's private network is fdaa::/16; loopback is allowed for local runs and tests.
DEFAULT_ALLOWED_NETWORKS = ("fdaa::/16", "127.0.0.0/8", "::1/128")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


@dataclass(frozen=True, slots=True)
class Builder:
    id: str
    app: str
    region: str
    address: str
    port: int
    sni: str
    seen_at: float = field(default=0.0, compare=False)
    source: str = field(default=SOURCE_DNS, compare=False)
    registered_at: float = field(default=0.0, compare=False)  # wall clock of the last registration intent

    @property
    def unconfirmed(self) -> bool:
        """Registered by an intent and not (yet) listed by DNS."""
        return self.source == SOURCE_INTENT

    @property
    def endpoint(self) -> str:
        """'[v6]:port' or 'v4:port'."""
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    @property
    def route(self) -> str:
        """The value of the routes hash: where this SNI goes, for humans."""
        return f"{self.endpoint} {self.id}"

    def to_json(self) -> bytes:
        record = {
            "id": self.id,
            "app": self.app,
            "region": self.region,
            "address": self.address,
            "port": self.port,
            "sni": self.sni,
            "seen_at": self.seen_at,
            "source": self.source,
        }
        if self.registered_at:
            record["registered_at"] = self.registered_at
        return orjson.dumps(record)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "Builder":
        """Parse a record written by ``to_json``; raises RecordError on garbage."""
        try:
            data = orjson.loads(raw)
            builder = cls(
                id=str(data["id"]),
                app=str(data["app"]),
                region=str(data["region"]),
                address=str(data["address"]),
                port=int(data["port"]),
                sni=str(data["sni"]),
                seen_at=float(data.get("seen_at", 0.0)),
                source=SOURCE_INTENT if data.get("source") == SOURCE_INTENT else SOURCE_DNS,
                registered_at=float(data.get("registered_at") or 0.0),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise RecordError("corrupt_json", repr(raw)[:120]) from exc
        return builder


def normalize_address(raw: str, allowed: tuple[Network, ...]) -> str:
    try:
        ip = ipaddress.ip_address(raw.strip().strip("[]"))
    except ValueError as exc:
        raise RecordError("bad_address", repr(raw)[:80]) from exc
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        # 'fdaa::1%eth0' parses, but a zone index means nothing to Envoy and would NACK the update
        raise RecordError("bad_address", repr(raw)[:80])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if allowed and not any(ip.version == net.version and ip in net for net in allowed):
        raise RecordError("address_not_allowed", str(ip))
    return str(ip)


def validate_sni(sni: str) -> str:
    sni = sni.strip().lower().rstrip(".")
    if not sni or len(sni) > MAX_SNI:
        raise RecordError("bad_sni", repr(sni)[:80])
    labels = sni.split(".")
    if len(labels) < 2 or not all(LABEL_RE.match(label) for label in labels):
        raise RecordError("bad_sni", repr(sni)[:80])
    if sni in RESERVED_NAMES:
        raise RecordError("reserved_sni", sni)
    return sni


def render_sni(template: str, *, id: str, app: str, region: str) -> str:
    try:
        sni = template.format(id=id, app=app, region=region)
    except (KeyError, IndexError, ValueError) as exc:
        raise RecordError("bad_sni_template", template) from exc
    return validate_sni(sni)


def make_builder(
    fields: dict[str, Any],
    *,
    sni_template: str,
    port: int,
    allowed: tuple[Network, ...],
    now: float = 0.0,
) -> Builder:
    """Validate one raw record from any source; raises RecordError, whose ``subject`` is the
    record's id when it has one."""
    try:
        return _checked(fields, sni_template=sni_template, port=port, allowed=allowed, now=now)
    except RecordError as err:
        rid = fields.get("id")
        if isinstance(rid, str) and not err.subject:
            err.subject = rid.strip()[:MAX_SNI]
        raise


def _checked(fields: dict[str, Any], *, sni_template: str, port: int, allowed: tuple[Network, ...],
             now: float) -> Builder:
    try:
        raw = {"id": fields["id"], "app": fields.get("app", ""), "region": fields.get("region", ""),
               "ip": fields["ip"]}
    except KeyError as exc:
        raise RecordError("missing_field", str(exc)) from exc
    for name, value in raw.items():
        if not isinstance(value, str):  # a JSON null or number must not become the id "None" or "12"
            raise RecordError("bad_address" if name == "ip" else f"bad_{name}", repr(value)[:80])
    bid = raw["id"].strip()
    app = raw["app"].strip().lower()
    region = raw["region"].strip().lower()
    raw_ip = raw["ip"]
    if not ID_RE.match(bid):
        raise RecordError("bad_id", repr(bid)[:80])
    if not APP_RE.match(app):
        raise RecordError("bad_app", repr(app)[:80])
    if not REGION_RE.match(region):
        raise RecordError("bad_region", repr(region)[:80])
    address = normalize_address(raw_ip, allowed)
    record_port = fields.get("port", port)
    if not isinstance(record_port, int) or isinstance(record_port, bool) or not 0 < record_port < 65536:
        raise RecordError("bad_port", repr(record_port)[:20])
    sni = render_sni(sni_template, id=bid.lower(), app=app, region=region)
    return Builder(bid, app, region, address, record_port, sni, now)


def domain_of(sni_template: str) -> str:
    """The builder domain: what follows the first label of the template.

    '{id}.builders.internal' -> 'builders.internal'. Every SNI the template makes
    ends with it, which is what the wildcard routing modes match on.
    """
    first, _, rest = sni_template.partition(".")
    if not rest or "{" in rest or "{" not in first:
        raise RecordError(
            "bad_sni_template",
            f"{sni_template!r}: the first label must hold the placeholders and the rest be a fixed domain",
        )
    return validate_sni(rest) if "." in rest else rest.lower()
