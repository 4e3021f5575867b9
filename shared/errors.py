"""The project's exception tree.

    XdsError
     +-- ConfigError          bad flags, environment or files
     +-- RecordError          one builder record failed validation
     +-- SourceError          a discovery source failed (DNS timeout, SERVFAIL, unreadable file)
     |    +-- TooBig            (discoverer.sources.dns_client) an answer that does not fit even over TCP
     +-- StoreError           Redis, as seen through shared.store
     |    +-- StoreUnavailable  Redis cannot be reached, or refuses while it fails over: retried
     |    +-- StoreMisuse       Redis refuses for a reason an operator must fix (WRONGTYPE, a broken
     |    |                     script, NOPERM/ACL, a refused password, OOM, MISCONF): logged as an
     |    |                     error naming the key and the fix, counted, retried with backoff
     |    +-- Fenced            a write carried a stale epoch or lease holder
     |    +-- VersionConflict   Redis holds another version than the writer expected
     |    +-- CorruptState      Redis holds data we cannot parse
     |    +-- StreamGap         the change stream does not continue what a replica serves: load it whole
     +-- StreamRefused        an xDS stream the replica will not serve (``code``: the gRPC status name)

Foreign errors (redis, dns, OSError) are translated at the boundary with
``raise X(...) from exc`` (Redis: ``shared.connect.translating``); gRPC status
codes appear only in the transports. Anything else that escapes a loop is a
bug: ``shared.supervise`` logs it with its traceback, counts it and runs the
loop again; it never ends a process.
"""
from __future__ import annotations


class XdsError(Exception):
    """Base of every error raised on purpose by this project."""


class ConfigError(XdsError):
    pass


class RecordError(XdsError):
    """A builder record is invalid. ``reason`` is a short, stable metric label; ``subject`` the
    record's id when it has one (what ``xdsctl explain`` looks rejections up by)."""

    def __init__(self, reason: str, detail: str = "", *, subject: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.subject = subject


class SourceError(XdsError):
    pass


class StoreError(XdsError):
    pass


class StoreUnavailable(StoreError):
    pass


class StoreMisuse(StoreError):
    """Redis refused a command for a reason that will not go away by itself.

    ``code`` is a short, stable metric label (WRONGTYPE, SCRIPT, NOPERM, AUTH,
    OOM, MISCONF, OTHER); ``what`` the operation; ``keys`` the keys it touches;
    ``key`` the culprit once known; ``hint`` what the operator should do.
    """

    def __init__(self, code: str, what: str, detail: str, *, keys: tuple[str, ...] = (), key: str | None = None,
                 hint: str = "") -> None:
        self.code, self.what, self.detail, self.keys, self.key, self.hint = code, what, detail, keys, key, hint
        super().__init__(self._text())

    def _text(self) -> str:
        text = f"{self.what}: Redis refused: {self.detail}"
        return f"{text}; {self.hint}" if self.hint else text

    def blame(self, key: str, hint: str) -> None:
        """Name the culprit key and the fix (found after the fact, e.g. with TYPE)."""
        self.key, self.hint = key, hint
        self.args = (self._text(),)


class Fenced(StoreError):
    """The write was refused: our epoch or lease is no longer current."""


class VersionConflict(StoreError):
    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"expected version {expected}, Redis holds {actual}")
        self.expected = expected
        self.actual = actual


class CorruptState(StoreError):
    pass


class StreamGap(StoreError):
    """The change stream does not continue the set a replica serves (a version jump, a trimmed
    stream, Redis restarted with other data): the replica loads the set whole."""


class StreamRefused(XdsError):
    """A stream the replica will not serve; ``code`` names the gRPC status for the transport."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
