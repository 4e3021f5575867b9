"""Moved to harness.envoy; this name stays for code written before the harness (import harness.envoy)."""
from harness.envoy import *  # noqa: F401,F403
