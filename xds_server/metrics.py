"""Prometheus metrics of an ADS replica.

The counters of every push and every ACK (and the change-to-ACK histogram)
are plain numbers in a dict, read by Prometheus at scrape time: a
prometheus_client child takes a lock and checks its state on every update,
which cost the fan-out a few microseconds per stream. Only the event loop
writes them; a scrape copies them.
"""
from __future__ import annotations

import bisect

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from shared import resources as rs


class Tally:
    """A labelled counter kept as plain numbers; ``add`` is a dict update."""

    def __init__(self, name: str, doc: str, labels: list[str]):
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple[str, ...], float] = {}
        REGISTRY.register(self)

    def add(self, key: tuple[str, ...], amount: float = 1) -> None:
        self.values[key] = self.values.get(key, 0) + amount

    def get(self, *key: str) -> float:
        return self.values.get(key, 0)

    def collect(self):
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in list(self.values.items()):
            family.add_metric(key, value)
        yield family


class Spread:
    """A labelled histogram kept as plain numbers; ``observe`` is a bisect and two additions."""

    def __init__(self, name: str, doc: str, labels: list[str], buckets: tuple[float, ...]):
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, tuple(buckets)
        self.values: dict[tuple[str, ...], list[float]] = {}  # key -> [count per bucket..., +Inf, sum]
        REGISTRY.register(self)

    def observe(self, key: tuple[str, ...], value: float) -> None:
        row = self.values.get(key)
        if row is None:
            row = self.values[key] = [0] * (len(self.bounds) + 2)
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def collect(self):
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for key, row in list(self.values.items()):
            total, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), row):
                total += count
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
            family.add_metric(key, buckets, sum_value=row[-1])
        yield family


STREAMS = Gauge("xds_streams", "Open xDS streams", ["kind"])  # label "kind": the transport, sotw or delta
ROUTING_MISMATCHES = Counter("xds_routing_mismatches_total",
                             "Streams refused: the node's bootstrap asks for another routing than this replica serves")
STREAMS_REFUSED = Counter("xds_streams_refused_total", "Streams refused: over --max-streams, a node identity not in its certificate, SotW on FCDS")
PUSHES = Tally("xds_pushes", "Responses sent", ["type", "kind"])
PUSH_BYTES = Tally("xds_push_bytes", "Bytes of responses sent", ["type", "kind"])
ACKS = Tally("xds_acks", "ACKs received", ["type"])
NACKS = Tally("xds_nacks", "NACKs received", ["type"])
BAD_REQUESTS = Counter("xds_bad_requests_total", "Requests refused (unknown type, malformed)", ["reason"])
VERSION = Gauge("xds_version", "Builder set version served")
SOURCE_VERSION = Gauge("xds_redis_source_version", "Version the Redis this replica reads from held at the last read")
RESYNCS = Counter("xds_resyncs_total", "Full reloads from Redis", ["reason"])
CORRUPT_RECORDS = Counter("xds_corrupt_records_total", "Builder records in Redis that failed to parse")
CHANGE_TO_ACK = Spread(
    "xds_change_to_ack_seconds", "From a change entering Redis (its stream id) to its ACK by an Envoy",
    ["type"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
PRIMARY_REACHABLE = Gauge("xds_primary_reachable",
                          "1 while the primary Redis (--redis-url) answers a PING within 1 s; 0 when cut off")
READ_LINK_DOWN = Gauge("xds_read_master_link_down_seconds",
                       "Seconds the read Redis (--redis-read-url) has lost its link to its master (0 while up)")
VERSION_LAG = Gauge("xds_envoy_version_lag_max", "Largest version lag of a connected Envoy")
LOOP_CRASHES = Counter("xds_loop_crashes_total",
                       "Unplanned exceptions caught in a loop or a stream (a bug: see the log)", ["loop"])
OPERATOR_ERRORS = Counter("xds_redis_operator_errors_total",
                          "Redis refusals an operator must fix (WRONGTYPE, SCRIPT, NOPERM, AUTH, OOM, ...)", ["code"])

_SHORT = {t: (s,) for t, s in rs.SHORT.items()}


def count_push(type_url: str, transport: str, size: int) -> None:
    key = (rs.SHORT.get(type_url, "?"), transport)
    PUSHES.add(key)
    PUSH_BYTES.add(key, size)


def count_ack(type_url: str, latency: float) -> None:
    key = _SHORT.get(type_url, ("?",))
    ACKS.add(key)
    CHANGE_TO_ACK.observe(key, latency)


def count_nack(type_url: str) -> None:
    NACKS.add(_SHORT.get(type_url, ("?",)))
