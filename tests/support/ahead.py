"""The mount suite's slowest session preparations, begun ahead in background threads.

Installing regfs from its wheel (about 15 s) and building the layered Debian image (about
40 s: mmdebstrap, umoci, skopeo) wait mostly on other processes. The session runs the unit
and component tests first (``testpaths``), so the root conftest begins both as the first
test starts, when a selected test that will run needs them; the mount fixture that needs
one then waits for it, or makes it itself if nothing began it (``pytest tests/mount/…``).
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.installed import install_wheel
from tests.support.layered import make_layered_apart

PREPARATIONS: dict[str, Callable[[Path], Any]] = {
    "installed_regfs": install_wheel,
    "layered": make_layered_apart,
}
"""Each preparation by the session fixture that needs it: made in a new temporary dir."""

# The preparations start processes from background threads while tests in the main
# thread set environment variables (monkeypatch.setenv). A child made by vfork shares the
# parent's memory until it execs, and one that read the environment while the parent's
# putenv moved it failed to exec: "[Errno 14] Bad address" (seen once in a full run). A
# forked child reads its own copy.
subprocess._USE_VFORK = False  # type: ignore[misc]  # CPython names it as the switch

_pool = ThreadPoolExecutor(max_workers=len(PREPARATIONS), thread_name_prefix="ahead")
_lock = threading.Lock()
_begun: dict[str, Future[Any]] = {}


def begin(fixture: str, temporary: pytest.TempPathFactory) -> None:
    """Begin the preparation ``fixture`` needs in a background thread, once."""
    with _lock:
        if fixture not in _begun:
            _begun[fixture] = _pool.submit(PREPARATIONS[fixture], temporary.mktemp(fixture))


def made(fixture: str, temporary: pytest.TempPathFactory) -> Any:
    """What ``fixture``'s preparation made (waited for, its failure raised here), made now
    if it was not begun."""
    with _lock:
        future = _begun.get(fixture)
    if future is None:
        return PREPARATIONS[fixture](temporary.mktemp(fixture))
    return future.result()
