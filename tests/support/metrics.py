"""Moved to harness.metrics; this name stays for code written before the harness (import harness.metrics)."""
from harness.metrics import *  # noqa: F401,F403
