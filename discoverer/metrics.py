"""Prometheus metrics of the discoverer."""
from prometheus_client import Counter, Gauge, Histogram

POLLS = Counter("discoverer_polls_total", "Source polls", ["result"])
SOURCE_ERRORS = Counter("discoverer_source_errors_total", "Failed source polls (DNS errors, timeouts)")
REJECTED = Counter("discoverer_records_rejected_total", "Records that failed validation", ["reason"])
IS_LEADER = Gauge("discoverer_is_leader", "1 while this process holds the lease")
EPOCH = Gauge("discoverer_epoch", "Fencing epoch of the current leadership (0 as standby)")
SET_REPAIRS = Counter("discoverer_set_repairs_total",
                      "Times the leader found the builder set changed under it (a hand edit) and rewrote it")
WRITES = Counter("discoverer_writes_total", "Fenced writes", ["result"])
WRITE_SECONDS = Histogram("discoverer_write_seconds", "Latency of one fenced write",
                          buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
BUILDERS = Gauge("discoverer_builders", "Builders in the set as last written or loaded")
HELD_REMOVALS = Gauge("discoverer_held_removals", "Removals held by the mass-removal guard")
POLL_SECONDS = Histogram("discoverer_poll_seconds", "Duration of one poll (fetch, validate, diff)",
                         buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
LOOP_CRASHES = Counter("discoverer_loop_crashes_total", "Unplanned exceptions caught in a loop (a bug: see the log)",
                       ["loop"])
OPERATOR_ERRORS = Counter("discoverer_redis_operator_errors_total",
                          "Redis refusals an operator must fix (WRONGTYPE, SCRIPT, NOPERM, AUTH, OOM, ...)", ["code"])
REDIS_UP = Gauge("discoverer_redis_up", "1 while the last call to Redis (the lease, every 0.1-0.5 s) succeeded")
INTENTS = Counter("discoverer_intents_total", "Registration intents by outcome", ["op", "status"])
INTENT_SECONDS = Histogram("discoverer_intent_seconds", "From an intent's append (its stream id) to its fenced write",
                           buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5))
INTENT_CONFLICTS = Counter("discoverer_intent_conflicts_total",
                           "DNS listed a builder at another address than its registration said (DNS won)")
UNCONFIRMED_EXPIRED = Counter("discoverer_unconfirmed_expired_total",
                              "Registrations removed because DNS did not list them within --confirm-grace")
INTENTS_REJECTED = Counter("discoverer_intents_rejected_total",
                           "Intents rejected, by reason (address_of_other_app, too_many_unconfirmed, ...)", ["reason"])
# the reasons the alerts watch (deploy/prometheus/flyxds.rules.yml), exported at 0 from the start so that
# increase() sees the first one
MISUSE_REASONS = ("address_of_other_app", "id_of_other_app", "address_of_other_id")
CAP_REASONS = ("too_many_unconfirmed", "unconfirmed_too_long", "mass_deregistration")
for _reason in (*MISUSE_REASONS, *CAP_REASONS):
    INTENTS_REJECTED.labels(_reason)
LISTED_DEREGISTRATIONS = Counter("discoverer_listed_deregistrations_total",
                                 "Deregistrations applied to builders DNS still listed")
