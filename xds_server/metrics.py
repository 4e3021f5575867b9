"""Prometheus metrics of an ADS replica."""
from prometheus_client import Counter, Gauge, Histogram

STREAMS = Gauge("xds_streams", "Open xDS streams", ["kind"])
STREAMS_REFUSED = Counter("xds_streams_refused_total", "Streams refused over the limit")
PUSHES = Counter("xds_pushes_total", "Responses sent", ["type", "kind"])
PUSH_BYTES = Counter("xds_push_bytes_total", "Bytes of responses sent", ["type", "kind"])
ACKS = Counter("xds_acks_total", "ACKs received", ["type"])
NACKS = Counter("xds_nacks_total", "NACKs received", ["type"])
BAD_REQUESTS = Counter("xds_bad_requests_total", "Requests refused (unknown type, malformed)", ["reason"])
VERSION = Gauge("xds_version", "Builder set version served")
SOURCE_VERSION = Gauge("xds_redis_source_version", "Version the Redis this replica reads from held at the last read")
RESYNCS = Counter("xds_resyncs_total", "Full reloads from Redis", ["reason"])
CORRUPT_RECORDS = Counter("xds_corrupt_records_total", "Builder records in Redis that failed to parse")
CHANGE_TO_ACK = Histogram(
    "xds_change_to_ack_seconds", "From a version entering this replica to its ACK by an Envoy",
    ["type"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
VERSION_LAG = Gauge("xds_envoy_version_lag_max", "Largest version lag of a connected Envoy")
LOOP_CRASHES = Counter("xds_loop_crashes_total",
                       "Unplanned exceptions caught in a loop or a stream (a bug: see the log)", ["loop"])
OPERATOR_ERRORS = Counter("xds_redis_operator_errors_total",
                          "Redis refusals an operator must fix (WRONGTYPE, SCRIPT, NOPERM, AUTH, OOM, ...)", ["code"])
