"""The Redis key scheme. No other module spells a key.

Every key of one prefix carries the same hash tag (the default prefix
``{xds}`` is one) so that one Lua script and one MULTI touch a single slot on
Redis Cluster.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

DEFAULT_PREFIX = "{xds}"
# The Redis type of each key (Keys attribute -> what `redis-cli TYPE` says), to name the culprit of a WRONGTYPE.
REDIS_TYPES = {"builders": "hash", "routes": "hash", "version": "string", "changes": "stream", "leader": "string",
         "epoch": "string", "replicas": "hash", "envoys": "hash", "discoverers": "hash", "intents": "stream",
         "intents_cursor": "string", "deregistered": "hash", "rejections": "hash"}

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
        """hash: ADS replica id -> JSON status (shared.status.ReplicaStatus)."""
        return self._key("replicas")

    @property
    def envoys(self) -> str:
        """hash: Envoy node id -> JSON status (shared.status.EnvoyStatus)."""
        return self._key("envoys")

    @property
    def discoverers(self) -> str:
        """hash: discoverer id -> JSON status (shared.status.DiscovererStatus)."""
        return self._key("discoverers")

    @property
    def intents(self) -> str:
        """stream: the provisioner's register/deregister intents, consumed by the leader."""
        return self._key("intents")

    def outcome(self, request: str) -> str:
        """string (JSON, with a TTL): the outcome of one intent."""
        return self._key(f"outcome:{request}")

    def redis_type_of(self, key: str) -> str | None:
        """The Redis type flyxds keeps at ``key`` ('hash', 'string', 'stream'); None for a key not ours."""
        for name, redis_type in REDIS_TYPES.items():
            if getattr(self, name) == key:
                return redis_type
        return None

    def fenced_write_keys(self) -> list[str]:
        return [self.leader, self.epoch, self.builders, self.routes, self.version, self.changes]

    @property
    def intents_cursor(self) -> str:
        """string: id of the last intent entry the leader applied (or rejected): where the next resumes."""
        return self._key("intents:cursor")

    @property
    def deregistered(self) -> str:
        """hash: builder id -> wall-clock second until which DNS may not bring it back."""
        return self._key("deregistered")

    @property
    def rejections(self) -> str:
        """hash: record id -> JSON {reason, detail, source, at}: the leader's recent rejections
        (bounded, best effort; discoverer.rejections writes it, ``xdsctl explain`` reads it)."""
        return self._key("rejections")

    def intent_write_keys(self, requests: list[str] = ()) -> list[str]:
        """The fenced write keys, then what applying intents touches (see shared/scripts.py APPLY)."""
        return [*self.fenced_write_keys(), self.intents_cursor, self.deregistered, self.intents,
                *(self.outcome(r) for r in requests)]
