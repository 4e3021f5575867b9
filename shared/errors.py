"""The project's exception tree.

    XdsError
     +-- ConfigError          bad flags, environment or files
     +-- RecordError          one builder record failed validation
     +-- SourceError          a discovery source failed (DNS timeout, SERVFAIL, unreadable file)
     +-- StoreError
          +-- StoreUnavailable  Redis cannot be reached
          +-- Fenced            a write carried a stale epoch or lease holder
          +-- VersionConflict   Redis holds another version than the writer expected
          +-- CorruptState      Redis holds data we cannot parse

Foreign errors (redis, dns, OSError) are translated at the boundary with
``raise X(...) from exc``; gRPC status codes appear only in the transports.
"""
from __future__ import annotations


class XdsError(Exception):
    """Base of every error raised on purpose by this project."""


class ConfigError(XdsError):
    pass


class RecordError(XdsError):
    """A builder record is invalid. ``reason`` is a short, stable metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SourceError(XdsError):
    pass


class StoreError(XdsError):
    pass


class StoreUnavailable(StoreError):
    pass


class Fenced(StoreError):
    """The write was refused: our epoch or lease is no longer current."""


class VersionConflict(StoreError):
    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"expected version {expected}, Redis holds {actual}")
        self.expected = expected
        self.actual = actual


class CorruptState(StoreError):
    pass
