"""Shared pytest configuration: mount tests need root, /dev/fuse and the Debian tools."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

MOUNT_TOOLS = ("docker-registry", "skopeo", "umoci", "fusermount3", "mmdebstrap", "systemd-nspawn")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [tool for tool in MOUNT_TOOLS if shutil.which(tool) is None]
    reasons = []
    if os.geteuid() != 0:
        reasons.append("not root")
    if not os.path.exists("/dev/fuse"):
        reasons.append("no /dev/fuse")
    if missing:
        reasons.append("missing " + ", ".join(missing) + " (run scripts/install.sh)")
    if not reasons:
        return
    skip = pytest.mark.skip(reason="mount tests: " + "; ".join(reasons))
    for item in items:
        if "mount" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def process_umask() -> Iterator[None]:
    """A command run in-process (``regfs cache pin`` by its function) makes the process's
    umask private, as a daemon's must be; put it back, or every later test builds its
    images and oracles with modes of 0700 and 0600."""
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)
