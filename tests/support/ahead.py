"""The mount suite's slowest session preparations, begun ahead in background threads.

Installing regfs from its wheel (about 15 s) and building the layered Debian image (about
40 s: mmdebstrap, umoci, skopeo) wait mostly on other processes. The session runs the unit
and component tests first (``testpaths``), so the root conftest begins both as the first
test starts, when a selected test that will run needs them; the mount fixture that needs
one then waits for it, or makes it itself if nothing began it (``pytest tests/mount/…``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar, cast

T = TypeVar("T")

_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ahead")
_lock = threading.Lock()
_begun: dict[str, Future[Any]] = {}


def begin(name: str, make: Callable[[], object]) -> None:
    """Begin ``make()`` in a background thread as the preparation ``name``, once."""
    with _lock:
        if name not in _begun:
            _begun[name] = _pool.submit(make)


def made(name: str, make: Callable[[], T]) -> T:
    """What ``begin(name, …)`` made (waited for, its failure raised here); or ``make()``
    now, if ``name`` was not begun."""
    with _lock:
        future = _begun.get(name)
    if future is None:
        return make()
    return cast(T, future.result())
