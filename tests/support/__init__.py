"""Test-only helpers on top of the harness (``harness/``, which starts the real parts).

- ``plane``: ``start_fly_plane``, a DNS-fed plane on the test's fixtures.
- ``procs``, ``redis``, ``dns``, ``envoy``: the old names of harness modules, kept for imports
  written before the harness moved; new code imports ``harness.*``.
"""
