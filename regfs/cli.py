"""``regfs``: parse the arguments and run the command they name.

Top level: each command is a module of ``regfs.commands``; the parser is
``regfs.commands.parser``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from regfs.commands import cache, docs, index_push, mount, prefetch, status
from regfs.commands.parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "mount": mount.mount, "umount": mount.umount, "index": index_push.run,
        "status": status.run, "cache": cache.run, "prefetch": prefetch.run,
        "completion": docs.completion,
    }  # fmt: skip
    return commands[args.command](args)
