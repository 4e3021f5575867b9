"""Logging setup for every command: ``--log-format json|text``."""
from __future__ import annotations

import logging
import sys
import time

import orjson

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class LogOnce:
    """Logs a message once per distinct key, then again only after ``every`` seconds."""

    def __init__(self, logger: logging.Logger, every: float = 300.0, limit: int = 10_000):
        self.logger = logger
        self.every = every
        self.limit = limit
        self._last: dict[str, float] = {}

    def log(self, level: int, key: str, msg: str, *args, **kwargs) -> bool:
        """Log unless ``key`` was logged less than ``every`` seconds ago; True when it was logged."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            return False
        if len(self._last) >= self.limit:
            self._last.clear()
        self._last[key] = now
        self.logger.log(level, msg, *args, **kwargs)
        return True

    def warning(self, key: str, msg: str, *args, **kwargs) -> bool:
        return self.log(logging.WARNING, key, msg, *args, **kwargs)

    def error(self, key: str, msg: str, *args, **kwargs) -> bool:
        return self.log(logging.ERROR, key, msg, *args, **kwargs)
