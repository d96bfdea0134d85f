"""``regfs index …``: what mounts read an image by, pushed beside it as its referrers.

Application layer: runs the subcommand named (``push``: a SOCI index,
``push-start``: a start record), importing only its module.
"""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS = {"push": "index_push", "push-start": "start_push"}
"""Each subcommand: the module of ``regfs.commands`` whose ``run`` runs it."""


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"regfs.commands.{SUBCOMMANDS[args.index_command]}")
    code: int = module.run(args)
    return code
