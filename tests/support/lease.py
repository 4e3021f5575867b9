"""Moved to harness.writer; this name stays for code written before the harness (import harness.writer)."""
from harness.writer import acquire  # noqa: F401
