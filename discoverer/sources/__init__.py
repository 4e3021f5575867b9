"""Sources of builder records. Each yields raw dicts for ``shared.model.make_builder``.

A source either returns a complete answer or raises SourceError: a partial or
failed answer must never look like "these builders are gone".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from shared.errors import RecordError


@dataclass(slots=True)
class Answer:
    records: list[dict] = field(default_factory=list)
    rejected: list[RecordError] = field(default_factory=list)
    # address -> app of machines of apps that are not builder apps, where the records do not list
    # them (Fly's per-app mode): what a registration intent is checked against
    other_apps: dict[str, str] = field(default_factory=dict)


class Source(Protocol):
    async def fetch(self) -> Answer: ...

    async def aclose(self) -> None: ...
