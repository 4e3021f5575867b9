"""What the discoverer routes and how cautiously it changes the set: one frozen dataclass.

Its field defaults are the flags' defaults (``discoverer.config`` reads them from here).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from shared.model import Builder, Network


@dataclass(frozen=True, kw_only=True)
class Rules:
    sni_template: str
    port: int
    allowed: tuple[Network, ...]
    grace: float = 0.5  # seconds a builder must be missing before its route is removed
    mass_share: float = 0.5  # a poll removing more than this share of the set is held ...
    mass_hold: float = 5.0  # ... until it has lasted this long
    apps: frozenset[str] = frozenset()  # only builders of these apps (with app_patterns; both empty: every app)
    app_patterns: tuple[re.Pattern, ...] = ()  # regexes an app name must match in full
    regions: frozenset[str] = frozenset()  # only builders in these regions (empty: every region)
    confirm_grace: float = 30.0  # seconds a registration may go unlisted by DNS; a deregistration's hold
    max_unconfirmed: int = 64  # registrations DNS does not list yet, at once; more are rejected
    mass_deregistration_share: float = 0.25  # of the DNS-listed builders, deregistered within confirm_grace
    unconfirmed_memory: float = 3600.0  # seconds the leader remembers an id's first unconfirmed registration

    def wants_app(self, app: str) -> bool:
        if not (self.apps or self.app_patterns):
            return True
        return app in self.apps or any(p.fullmatch(app) for p in self.app_patterns)

    def wants(self, b: Builder) -> bool:
        return self.wants_app(b.app) and (not self.regions or b.region in self.regions)


def over_share(count: int, size: int, share: float, *, floor: int = 0) -> bool:
    """More than ``share`` of ``size`` (and more than ``floor``): the mass-removal and mass-deregistration test."""
    return count > max(floor, share * size)
