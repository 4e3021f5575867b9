"""The regions lab (harness/regions.py) for the tests of issue 20: namespaces need root and ``ip``."""
from __future__ import annotations

import os
import shutil

import pytest

from harness.regions import Lab, LabSpec


def lab_or_skip(tmp_path, spec: LabSpec = LabSpec()) -> Lab:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the regions lab needs root and iproute2 (ip netns); CI runs as root")
    return Lab(tmp_path / "lab", spec).start()


@pytest.fixture
def lab_of(tmp_path, request):
    """``lab_of(spec)``: a started lab, closed after the test (its logs printed when the test failed)."""
    labs = []

    def make(spec: LabSpec = LabSpec()) -> Lab:
        labs.append(lab_or_skip(tmp_path / f"lab{len(labs)}", spec))
        return labs[-1]

    yield make
    report = getattr(request.node, "rep_call", None)
    for lab in labs:
        if report is not None and report.failed:
            print(lab.plane.logs())
        lab.close()
