"""Test-only helpers on top of the harness (``harness/``, which starts the real parts).

- ``plane``: ``start_fly_plane``, a DNS-fed plane on the test's fixtures.
- ``monitoring``: a plane exporting metrics and a real Prometheus scraping it.
- ``redis_acl``: Redis 7 over TLS loading exactly deploy/redis.acl.
"""
