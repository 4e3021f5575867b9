"""Moved to harness.redis_ha; this name stays for code written before the harness (import harness.redis_ha)."""
from harness.redis_ha import *  # noqa: F401,F403
