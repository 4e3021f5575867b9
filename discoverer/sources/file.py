"""A JSON file: a list of ``{id, app, region, ip[, port]}`` objects, re-read when it changes."""
from __future__ import annotations

import os
from pathlib import Path

import orjson

from shared.errors import RecordError, SourceError

from . import Answer


class FileSource:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._answer: Answer | None = None

    async def fetch(self) -> Answer:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp and self._answer is not None:
                return self._answer
            data = orjson.loads(self.path.read_bytes())
        except OSError as exc:
            raise SourceError(f"reading {self.path}: {exc}") from exc
        except orjson.JSONDecodeError as exc:
            raise SourceError(f"{self.path} is not valid JSON: {exc}") from exc
        if not isinstance(data, list):
            raise SourceError(f"{self.path} must hold a JSON list of builder objects")
        answer = Answer()
        for item in data:
            if isinstance(item, dict):
                answer.records.append(item)
            else:
                answer.rejected.append(RecordError("not_an_object", repr(item)[:80]))
        self._stamp, self._answer = stamp, answer
        return answer

    async def aclose(self) -> None:
        pass
