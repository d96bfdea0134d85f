"""Shared pytest configuration: mount tests need root, /dev/fuse and the Debian tools; the
mount suite's slowest preparations begin as the session does."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support import ahead

# Property tests check what happens to an input, not how long an example takes; they run
# beside the mount suite's preparations (below), on a machine of two cores.
settings.register_profile("regfs", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("regfs")

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


@pytest.fixture(scope="session", autouse=True)
def mount_preparations_begun(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Begin the wheel install and the layered image (``tests/support/ahead.py``) as the
    session's first test starts, if a mount test that will run needs them."""
    needs: set[str] = set()
    for item in request.session.items:
        if "mount" in item.keywords and item.get_closest_marker("skip") is None:
            needs.update(getattr(item, "fixturenames", ()))
    for fixture in needs & ahead.PREPARATIONS.keys():
        ahead.begin(fixture, tmp_path_factory)
