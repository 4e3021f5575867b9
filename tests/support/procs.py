"""Moved to harness.procs; this name stays for code written before the harness (import harness.procs)."""
from harness.procs import *  # noqa: F401,F403
