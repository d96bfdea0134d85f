"""``regfs``: parse the arguments and run the command they name.

Top level: each command is a module of ``regfs.commands``; the parser is
``regfs.commands.parser``. Only the module of the command named is imported: each pulls
in its own part of regfs (the index builders, the HTTP stack), and ``regfs mount`` must
answer soon.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence

from regfs.commands.parser import build_parser

COMMANDS = {
    "mount": ("mount", "mount"), "umount": ("umount", "umount"), "index": ("index", "run"),
    "status": ("status", "run"), "cache": ("cache", "run"), "prefetch": ("prefetch", "run"),
    "completion": ("docs", "completion"), "install-pyfuse3": ("install_pyfuse3", "run"),
}  # fmt: skip
"""Each command: the module of ``regfs.commands`` and the function in it that runs it."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, function = COMMANDS[args.command]
    command: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(f"regfs.commands.{module}"), function
    )
    return command(args)
