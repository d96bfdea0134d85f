"""``regfs mount`` answers before it imports what only a registry request needs (issue 21:
the mount live in ≤ 0.15 s): checked by the modules loaded, not by a clock."""

from __future__ import annotations

import subprocess
import sys

from regfs.commands.parser import build_parser
from regfs.layers.ztoc_builder import DEFAULT_SPAN_SIZE

DEFERRED = ("httpx", "httpcore", "cryptography", "indexed_gzip", "zstandard", "sqlite3",
            "regfs.registry.client", "regfs.layers.layer_store", "regfs.tree.image")  # fmt: skip
"""Imported by the first request beyond the mount's root, not before the mount answers."""


def test_the_mount_command_imports_no_registry_client_or_layer_reader() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c",
         "import sys, regfs.cli, regfs.commands.mount; print(*sys.modules, sep='\\n')"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert [name for name in DEFERRED if name in loaded] == []


def test_the_span_size_default_is_the_builder_s() -> None:
    """The parser names it without importing the builder (and indexed_gzip with it)."""
    args = build_parser().parse_args(["index", "push", "127.0.0.1:5000/a:1"])
    assert args.span_size == DEFAULT_SPAN_SIZE
