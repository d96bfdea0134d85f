"""Component tests run on trio's autojump clock: backoff, deadlines and token lifetimes
pass in virtual time, so no test sleeps and none depends on the machine's speed.

``kernel`` is regfs's FUSE handlers over an in-memory ``registry``, for tests of the tree
and the FUSE adapter without a mount."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pyfuse3
import pytest

from tests.support.fuse_harness import Kernel, readdir_reply
from tests.support.memory_registry import MemoryRegistry

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in item.path.parents:
            continue
        function = getattr(item, "function", None)
        fixtures = getattr(item, "fixturenames", ())
        if inspect.iscoroutinefunction(function) and "autojump_clock" not in fixtures:
            raise pytest.UsageError(f"{item.nodeid} must take the autojump_clock fixture")


@pytest.fixture
def registry() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
def metadata_ttl() -> float:
    """The mount's ``--metadata-ttl``; a test parametrizes it to change it."""
    return 60.0


@pytest.fixture
def kernel(
    registry: MemoryRegistry,
    tmp_path: Path,
    metadata_ttl: float,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Kernel]:
    """regfs's handlers over ``registry`` and a cache in ``tmp_path``; readdir replies go
    to the harness's tokens (see ``tests/support/fuse_harness.py``)."""
    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)
    kernel = Kernel(registry, tmp_path / "cache", ttl=metadata_ttl)
    yield kernel
    kernel.close()
