"""What a Redis says of its link to its master (INFO replication), for the services and xdsctl.

A replica in a far region that lost its master keeps answering with what it had: a reader
that does not ask cannot tell a frozen set from a quiet one. ``Link`` is the answer in one
shape: whether this Redis is a replica, whether its link is up, and for how long it is down.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    replica: bool = False  # False: a master (or a single Redis): no link to lose
    up: bool = True
    down_seconds: float = 0.0  # how long the link has been down (0 while up)
    master: str = ""  # host:port of its master

    @classmethod
    def from_info(cls, info: dict) -> "Link":
        """From INFO replication as redis-py parses it (Redis words: role slave, master_link_status)."""
        if info.get("role") != "slave":
            return cls()
        master = f"{info.get('master_host')}:{info.get('master_port')}"
        if info.get("master_link_status") == "up":
            return cls(replica=True, master=master)
        try:
            down = float(info.get("master_link_down_since_seconds", 0))
        except (TypeError, ValueError):
            down = 0.0
        return cls(replica=True, up=False, down_seconds=max(down, 0.0), master=master)

    def describe(self) -> str:
        if not self.replica:
            return "a primary"
        if self.up:
            return f"a replica of {self.master}, its link up"
        return f"a replica of {self.master}: its link to the primary is down for {self.down_seconds:.0f}s"
