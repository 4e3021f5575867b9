"""Reading a process' Prometheus /metrics in tests (bounded in time)."""
from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int, timeout: float = 3.0) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted label items): value} from http://127.0.0.1:PORT/metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(port: int, name: str, **labels) -> float:
    """One sample's value; 0 when the process has not exported it (yet)."""
    return scrape(port).get((name, tuple(sorted(labels.items()))), 0.0)
