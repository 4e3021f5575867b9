"""Moved to harness.dns; this name stays for code written before the harness (import harness.dns)."""
from harness.dns import *  # noqa: F401,F403
