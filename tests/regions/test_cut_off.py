"""A region cut off from the primary says so, keeps what it serves, and heals (issue 20, item 2).

syd's xds-server reads the syd replica and writes status to the ord primary through the WAN.
The path is cut (held, as a partition): the xds-server logs a WARNING within 5 s naming the
cut and what it serves, every few seconds while it lasts; ``xds_primary_reachable`` drops to 0
and ``xds_read_master_link_down_seconds`` rises; it keeps every builder (no deletion) while
ord moves on; ``xdsctl status`` on the syd replica says the link is down. Healed, it says so
and serves ord's version within 2 s.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from shared.connect import aclose, connect
from shared.keys import Keys
from shared.model import Builder
from shared.store import Store
from tests.support.lease import acquire
from tests.support.procs import REPO, free_port, scrape, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
CUT = "cut off from the primary"
CUT_SECONDS = 10.0  # the bench cuts for 60 s


class Writer:
    """The leader in ord: fenced writes on the primary, one version per builder."""

    def __init__(self, url: str):
        self.store = Store(connect(url, name="tests"), Keys())
        self.lease = None
        self.version = 0

    async def add(self, names: str) -> int:
        if self.lease is None:
            self.lease = await acquire(self.store, "ord-leader", 600_000)
            self.version = self.lease.version
        for name in names:
            b = Builder(name, "app", "ord", "127.0.0.2", 443, f"{name}.builders.internal", 1.0)
            self.version = await self.store.apply(self.lease, self.version, [b], [])
        return self.version

    async def close(self) -> None:
        await aclose(self.store.client)


def served(port: int) -> dict:
    m = scrape(port)
    return {k: m[k] for k in ("xds_version", "xds_primary_reachable", "xds_read_master_link_down_seconds")}


def xdsctl_status(url: str) -> str:
    out = subprocess.run([sys.executable, "-m", "xdsctl.main", "--redis-url", url, "status"], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_a_region_cut_off_says_so_keeps_its_builders_and_heals(two_regions, procs):
    r = two_regions
    writer = Writer(r.primary_url)
    try:
        assert await writer.add("abc") == 3
        metrics = free_port()
        xds = procs.start("xds-server", ["--redis-url", r.primary_url_from_syd, "--redis-read-url", r.replica_url,
                                         "--listen", f"127.0.0.1:{free_port()}", "--replica-id", "syd-1",
                                         "--metrics-listen", f"127.0.0.1:{metrics}"])
        wait_until(lambda: served(metrics)["xds_version"] == 3, 20, what="syd serving version 3")
        assert served(metrics)["xds_primary_reachable"] == 1
        assert "link to the primary is down" not in xdsctl_status(r.replica_url)
        assert not xds.log_has(CUT)  # the negative check: nothing said while nothing is cut

        cut_at = time.monotonic()
        r.wan.cut("ord", "syd")
        xds.wait_for_log(CUT, 5)
        first_warning = time.monotonic() - cut_at
        assert served(metrics)["xds_primary_reachable"] == 0
        assert await writer.add("de") == 5  # ord moves on; syd cannot see it
        wait_until(lambda: served(metrics)["xds_read_master_link_down_seconds"] > 0, 10,
                   what="the syd replica's link down")
        assert "link to the primary is down" in xdsctl_status(r.replica_url)
        wait_until(lambda: xds.log().count(CUT) >= 2, 8, what="the WARNING said again")
        assert "status writes failing since" in xds.log()
        remaining = CUT_SECONDS - (time.monotonic() - cut_at)
        if remaining > 0:  # the cut lasts CUT_SECONDS; every read meanwhile must show the set kept
            wait_until(lambda: time.monotonic() - cut_at >= CUT_SECONDS or served(metrics)["xds_version"] != 3,
                       remaining + 1, what="the cut lasting")
        assert served(metrics)["xds_version"] == 3, "a cut region must keep the set it had, not drop it"
        assert "loaded version" not in xds.log().split(CUT, 1)[1]  # nothing reloaded as deletions

        healed_at = time.monotonic()
        r.wan.heal("ord", "syd")
        wait_until(lambda: served(metrics)["xds_version"] == 5, 10, what="syd serving version 5 after the heal")
        converged = time.monotonic() - healed_at
        xds.wait_for_log("the primary is reachable again", 5)
        wait_until(lambda: served(metrics)["xds_primary_reachable"] == 1, 5, what="primary reachable again")
        print(f"first WARNING {first_warning:.2f}s after the cut; converged {converged:.2f}s after the heal")
        assert first_warning <= 5.0
        assert converged <= 2.0, f"converged {converged:.2f}s after the heal"
    finally:
        await writer.close()
