"""What the caller of an intent reads back (``{xds}:outcome:<request>``): pure, no I/O."""
from __future__ import annotations

from shared.errors import RecordError
from shared.model import Builder
from shared.outcomes import APPLIED, SUPERSEDED

from .intents import REGISTER, Intent


def outcome(it: Intent, wall: float, status: str, error: RecordError | None = None,
            builder: Builder | None = None) -> dict:
    """One outcome; the write script adds ``version`` to every outcome that is not rejected."""
    out = {"request": it.request, "entry": it.entry_id, "op": it.op, "id": it.id, "status": status,
           "at": round(wall, 3)}
    if error is not None:
        out["reason"], out["detail"] = error.reason, error.detail
    if builder is not None:
        out.update(region=builder.region, address=builder.address, port=builder.port, sni=builder.sni)
    return out


def mark_superseded(outcomes: list[tuple[Intent, dict]], target: dict[str, Builder]) -> None:
    """A later intent of the same batch undid an earlier one: the write does not hold what it asked."""
    for it, out in outcomes:
        if out["status"] != APPLIED:
            continue
        final = target.get(it.id)
        if (final is None or final != it.builder) if it.op == REGISTER else final is not None:
            out["status"] = SUPERSEDED
