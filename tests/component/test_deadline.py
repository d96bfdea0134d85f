"""A registry call's deadline says what timed out, and never blames a call begun with no
time left (its caller's time spent on an earlier one) for not answering "within 0s"."""

from __future__ import annotations

import pytest
import trio

from regfs.domain.errors import Unavailable
from regfs.registry.retry_policy import Deadline


async def test_a_call_that_times_out_names_itself_and_its_wait(
    autojump_clock: trio.abc.Clock,
) -> None:
    expected = r"GET /v2/a/tags/list: no answer within 5s"
    with pytest.raises(Unavailable, match=expected), Deadline(5, "GET /v2/a/tags/list"):
        await trio.sleep(10)


async def test_a_call_begun_with_its_caller_s_time_spent_says_so(
    autojump_clock: trio.abc.Clock,
) -> None:
    spent = trio.CancelScope(deadline=trio.current_time() - 1)  # an earlier call took it
    expected = "GET /v2/a/b/tags/list: not sent, the time for it was spent before"
    with spent, pytest.raises(Unavailable, match=expected), Deadline(5, "GET /v2/a/b/tags/list"):
        await trio.sleep(1)
