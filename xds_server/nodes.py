"""What an Envoy's node (from its bootstrap) asks for: its region, its listener, its routing."""
from __future__ import annotations

from envoy.config.core.v3 import base_pb2

from shared import resources as rs

from .render import ListenerSpec


def _meta(node: base_pb2.Node, key: str) -> str | None:
    value = node.metadata.fields.get(key)
    if value is None:
        return None
    which = value.WhichOneof("kind")  # protobuf's name for Value's oneof
    if which == "string_value":
        return value.string_value
    if which == "number_value":
        return str(int(value.number_value))
    return None


def node_region(node: base_pb2.Node) -> str | None:
    """locality.region, else metadata 'region', else locality.zone (``envoy --service-zone $FLY_REGION``)."""
    return (node.locality.region or _meta(node, rs.META_REGION) or node.locality.zone or "").lower() or None


def node_listener(node: base_pb2.Node, defaults: ListenerSpec) -> ListenerSpec:
    """The listener address and port the node's bootstrap asks for, else the replica's defaults."""
    port = _meta(node, rs.META_LISTENER_PORT)
    try:
        port_value = int(float(port)) if port else defaults.port
    except (ValueError, OverflowError):
        port_value = defaults.port
    if not 0 < port_value < 65536:
        port_value = defaults.port
    return ListenerSpec(address=_meta(node, rs.META_LISTENER_ADDRESS) or defaults.address, port=port_value)


def node_routing(node: base_pb2.Node) -> str | None:
    """The routing the node's bootstrap was written for (``xdsctl bootstrap --routing``), if it says."""
    return _meta(node, rs.META_ROUTING)
