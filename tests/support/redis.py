"""Moved to harness.redis; this name stays for code written before the harness (import harness.redis)."""
from harness.redis import *  # noqa: F401,F403
