"""``python -m deploy.grafana [--check]``: write deploy/grafana/flyxds.json, or exit 1 when it is stale."""
from __future__ import annotations

import sys

from .dashboard import JSON_PATH, render


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        current = JSON_PATH.read_text() if JSON_PATH.exists() else ""
        if current != text:
            print(f"{JSON_PATH} is stale: run python -m deploy.grafana", file=sys.stderr)
            return 1
        return 0
    if argv:
        print("usage: python -m deploy.grafana [--check]", file=sys.stderr)
        return 2
    JSON_PATH.write_text(text)
    print(f"wrote {JSON_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
