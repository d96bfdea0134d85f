"""``regfs status`` as text: what the docs say it shows of a mount."""

from __future__ import annotations

from typing import Any

from regfs.commands.status import format_status


def _state(**changes: Any) -> dict[str, Any]:
    """A mount's ``user.regfs.status``, as ``regfs mount`` writes it, with ``changes``."""
    state: dict[str, Any] = {
        "mountpoint": "/mnt/reg", "pid": 7, "version": "0.1.0",
        "options": {"platform": "linux/amd64", "timeout": 30.0, "metadata_ttl": 60.0,
                    "allow_other": False, "soci_v1_referrers": False,
                    "kernel_caching": "on", "stale": True, "max_stale": None},
        "cache": {"dir": "/c", "size_limit": 1 << 30, "size": 0,
                  "chunk_reads": {"memory": 0, "disk": 0, "fetched": 0}},
        "registries": {}, "unreachable": {}, "stale_answers": {"now": 0, "served": 0},
        "requests_in_flight": 0,
    }  # fmt: skip
    state.update(changes)
    return state


def test_a_registry_down_is_named_and_the_stale_answers_counted() -> None:
    """configuration.md: ``regfs status`` counts the stale answers and names the
    unreachable hosts; only ``--json`` did."""
    down = {"reg.lan:5000": "GET http://reg.lan:5000/v2/_catalog: ConnectError: refused"}
    text = format_status(_state(unreachable=down, stale_answers={"now": 2, "served": 5}))
    assert "unreachable 1 host:\n  reg.lan:5000: GET http://reg.lan:5000/v2/_catalog" in text
    assert "stale       2 last answers shown in place of the registry's, served 5 times" in text


def test_a_mount_with_every_registry_up_says_nothing_of_outages() -> None:
    text = format_status(_state())
    assert "unreachable" not in text
    assert "stale" not in text


def test_no_stale_and_max_stale_are_among_the_options() -> None:
    options = _state()["options"]
    assert ", no stale answers" in format_status(_state(options={**options, "stale": False}))
    older = format_status(_state(options={**options, "max_stale": 300.0}))
    assert ", stale answers up to 300s old" in older
