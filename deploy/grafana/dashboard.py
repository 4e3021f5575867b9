"""The panels of the flyxds dashboard: what each shows and the PromQL behind it.

Every query names only metrics the services export (discoverer/metrics.py,
xds_server/metrics.py); tests/ops/test_dashboard.py scrapes a live plane and
fails on a panel whose metric it does not expose, and on a stale JSON.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

JSON_PATH = Path(__file__).with_name("flyxds.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
METRIC = re.compile(r"\b(?:discoverer|xds)_[a-z_]+\b")


@dataclass(frozen=True)
class Panel:
    title: str
    expr: str
    unit: str = "short"
    legend: str = ""
    kind: str = "timeseries"  # or "stat"
    width: int = 8


ROWS: dict[str, list[Panel]] = {
    "Control plane": [
        Panel("Leader (discoverers holding the lease)", "sum(discoverer_is_leader)", kind="stat", width=6),
        Panel("Epoch", "max(discoverer_epoch)", kind="stat", width=6),
        Panel("Builders", "max(discoverer_builders * on (instance) discoverer_is_leader)", kind="stat", width=6),
        Panel("Discoverers reaching Redis", "sum(discoverer_redis_up)", kind="stat", width=6),
    ],
    "Discoverer": [
        Panel("Polls by result", "sum by (result) (rate(discoverer_polls_total[1m]))", "ops", "{{result}}"),
        Panel("Fenced write p99", "histogram_quantile(0.99, sum by (le) (rate(discoverer_write_seconds_bucket[5m])))",
              "s"),
        Panel("Records rejected by reason", "sum by (reason) (increase(discoverer_records_rejected_total[5m]))",
              legend="{{reason}}"),
        Panel("Intents by outcome", "sum by (op, status) (increase(discoverer_intents_total[5m]))",
              legend="{{op}} {{status}}"),
        Panel("Intent to write p99",
              "histogram_quantile(0.99, sum by (le) (rate(discoverer_intent_seconds_bucket[5m])))", "s"),
        Panel("Removals held by the mass-removal guard", "max(discoverer_held_removals)"),
    ],
    "ADS replicas and Envoys": [
        Panel("Version served", "xds_version", legend="{{instance}}"),
        Panel("Streams", "sum by (instance, kind) (xds_streams)", legend="{{instance}} {{kind}}"),
        Panel("Change to ACK p99",
              "histogram_quantile(0.99, sum by (le, type) (rate(xds_change_to_ack_seconds_bucket[5m])))", "s",
              "{{type}}"),
        Panel("Pushes", "sum by (type) (rate(xds_pushes_total[1m]))", "ops", "{{type}}"),
        Panel("NACKs", "sum by (instance, type) (increase(xds_nacks_total[5m]))", legend="{{instance}} {{type}}"),
        Panel("Largest Envoy version lag", "xds_envoy_version_lag_max", legend="{{instance}}"),
        Panel("Redis version read vs served", "xds_version - xds_redis_source_version", legend="{{instance}}"),
        Panel("Full resyncs", "sum by (reason) (increase(xds_resyncs_total[10m]))", legend="{{reason}}"),
    ],
    "Regions": [
        Panel("Primary reachable (0: this replica's region is cut off)", "min by (instance) (xds_primary_reachable)",
              legend="{{instance}}"),
        Panel("Read replica's link to the primary down", "max by (instance) (xds_read_master_link_down_seconds)", "s",
              legend="{{instance}}"),
    ],
    "Errors": [
        Panel("Loop crashes", "sum by (instance, loop) (increase(discoverer_loop_crashes_total[10m]) "
              "or increase(xds_loop_crashes_total[10m]))", legend="{{instance}} {{loop}}"),
        Panel("Redis refusals an operator must fix", "sum by (instance, code) "
              "(increase(discoverer_redis_operator_errors_total[5m]) or increase(xds_redis_operator_errors_total[5m]))",
              legend="{{instance}} {{code}}"),
        Panel("DNS poll errors", "sum(increase(discoverer_source_errors_total[5m]))"),
    ],
}


def _panel(p: Panel):
    kind = stat if p.kind == "stat" else timeseries
    query = prometheus.Dataquery().expr(p.expr).legend_format(p.legend or "__auto")
    return kind.Panel().title(p.title).unit(p.unit).datasource(DATASOURCE).with_target(query).span(p.width)


def build() -> dashboard.Dashboard:
    board = (dashboard.Dashboard("flyxds control plane").uid("flyxds").tags(["flyxds"]).refresh("10s")
             .time("now-1h", "now").with_variable(dashboard.DatasourceVariable("datasource").type("prometheus")))
    for row, panels in ROWS.items():
        board = board.with_row(dashboard.Row(row))
        for p in panels:
            board = board.with_panel(_panel(p))
    return board


def render() -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def metrics() -> set[str]:
    """Every metric name a panel queries."""
    return {name for panels in ROWS.values() for p in panels for name in METRIC.findall(p.expr)}
