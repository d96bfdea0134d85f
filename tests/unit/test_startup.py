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


def test_the_mount_command_takes_no_version_from_importlib_metadata() -> None:
    """importlib.metadata (the email package, a scan of ``sys.path``) cost ~20 ms of each
    mount's start: regfs does not import it, nor does pyfuse3 as ``scripts/install.sh``
    builds it (``regfs/patches/pyfuse3-version-without-metadata.patch``); a stock pyfuse3
    still does, and is the only one allowed to."""
    script = (
        "import sys, regfs.cli, regfs.commands.mount, pyfuse3, pyfuse3._pyfuse3 as p\n"
        "print('importlib.metadata' in sys.modules,"
        " 'from importlib.metadata import' in open(p.__file__).read(),"
        " hasattr(pyfuse3.Operations, 'enable_no_open'))"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded, stock_asks, patched = run.stdout.split()
    assert loaded == stock_asks
    if patched == "True":
        assert loaded == "False", "pyfuse3 has regfs's kernel-caching patch, not its version one"


def loaded_after(*modules: str) -> list[str]:
    """The modules a fresh interpreter holds once it imported the services' module (as a
    mount does before it is live) and then ``modules``."""
    script = (
        "import sys, importlib, regfs.commands.services\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(*sys.modules, sep='\\n')"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return run.stdout.split()


FIRST_REQUESTS = ("regfs.layers.mount_cache", "regfs.registry.client",
                  "regfs.tree.last_answers", "regfs.tree.metadata")  # fmt: skip
"""What a mount's first requests to the registry (a catalog, a tag) are made with."""
LAYER_READERS = ("regfs.layers.layer_store", "regfs.layers.index.layer_index",
                 "regfs.layers.formats.toc", "regfs.layers.builders", "sqlite3")  # fmt: skip
"""Not needed by those: imported meanwhile, in a worker thread (``MountServices.warm_up``).
From a cold disk, importing them first held the first catalog request back 0.2 s;
0.09-0.11 s without them."""


def test_what_a_first_registry_request_needs_imports_no_layer_reader() -> None:
    loaded = loaded_after(*FIRST_REQUESTS)
    assert [name for name in LAYER_READERS if name in loaded] == []


WRITERS_ONLY = ("flatbuffers", "numpy", "indexed_gzip", "regfs.layers.ztoc_builder")
"""Used by ``regfs index push`` alone: a mount, which only reads zTOCs, never pays their
imports (flatbuffers imports numpy when installed: 50 ms of a first request)."""


def test_a_mount_s_services_import_no_ztoc_writer() -> None:
    loaded = loaded_after(*FIRST_REQUESTS, "regfs.layers.layer_store", "regfs.tree.image")
    assert [name for name in WRITERS_ONLY if name in loaded] == []


def test_the_span_size_default_is_the_builder_s() -> None:
    """The parser names it without importing the builder (and indexed_gzip with it)."""
    args = build_parser().parse_args(["index", "push", "127.0.0.1:5000/a:1"])
    assert args.span_size == DEFAULT_SPAN_SIZE
