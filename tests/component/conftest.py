"""Component tests run on trio's autojump clock: backoff, deadlines and token lifetimes
pass in virtual time, so no test sleeps and none depends on the machine's speed."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in item.path.parents:
            continue
        function = getattr(item, "function", None)
        fixtures = getattr(item, "fixturenames", ())
        if inspect.iscoroutinefunction(function) and "autojump_clock" not in fixtures:
            raise pytest.UsageError(f"{item.nodeid} must take the autojump_clock fixture")
