"""Fixtures of the security tests."""
from __future__ import annotations

import pytest

from tests.support.redis_acl import REDIS7, acl_redis

needs_redis7 = pytest.mark.skipif(not REDIS7.exists(), reason="Debian's redis-server 7 is not installed")


@pytest.fixture
def secure_redis(tmp_path):
    """Redis 7 over TLS with the shipped ACL file: ``(url(user), client(user))``."""
    with acl_redis(tmp_path) as (url, client):
        yield url, client
