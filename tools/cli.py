"""The one way the tools' command lines start: logging to stderr, then asyncio.run."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Awaitable, Callable


def run(parser: argparse.ArgumentParser, main: Callable[[argparse.Namespace], Awaitable[None]],
        argv: list[str] | None = None) -> int:
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(args))
    return 0
