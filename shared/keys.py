"""The Redis key scheme. No other module spells a key.

Every key of one prefix carries the same hash tag (the default prefix
``{xds}`` is one) so that one Lua script and one MULTI touch a single slot on
Redis Cluster.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

DEFAULT_PREFIX = "{xds}"
# Entries of the status hashes (replicas, envoys, discoverers) carry a heartbeat, since hash fields
# cannot expire on Redis 6.2: one older than this belongs to a process that is gone. Readers hide
# such entries; their writers prune them.
STALE_AFTER = 15.0


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        opening, closing = self.prefix.find("{"), self.prefix.find("}")
        if opening < 0 or closing <= opening + 1:
            raise ConfigError(
                f"prefix {self.prefix!r} needs a non-empty hash tag like '{{xds}}' "
                "so all keys share one Redis Cluster slot"
            )

    def _key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    @property
    def builders(self) -> str:
        """hash: builder id -> JSON record."""
        return self._key("builders")

    @property
    def routes(self) -> str:
        """hash: SNI -> '[address]:port builder-id', for humans."""
        return self._key("routes")

    @property
    def version(self) -> str:
        """string: version of the builder set, only ever increases."""
        return self._key("version")

    @property
    def changes(self) -> str:
        """stream: one entry per version."""
        return self._key("changes")

    @property
    def leader(self) -> str:
        """string with a PX TTL: the discoverer holding the lease."""
        return self._key("leader")

    @property
    def epoch(self) -> str:
        """string: fencing token, INCR'd on every new leadership."""
        return self._key("epoch")

    @property
    def replicas(self) -> str:
        """hash: ADS replica id -> JSON status."""
        return self._key("replicas")

    @property
    def envoys(self) -> str:
        """hash: Envoy node id -> JSON status."""
        return self._key("envoys")

    @property
    def discoverers(self) -> str:
        """hash: discoverer id -> JSON status."""
        return self._key("discoverers")

    def fenced_write_keys(self) -> list[str]:
        return [self.leader, self.epoch, self.builders, self.routes, self.version, self.changes]
