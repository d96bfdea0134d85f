"""mount(8)'s helper convention turned into ``regfs mount`` arguments."""

from __future__ import annotations

import argparse

import pytest

from regfs.commands.mount_helper import mount_arguments
from regfs.commands.parser import build_parser


def test_options_become_long_options_and_generic_ones_are_left_to_mount() -> None:
    argv = ["regfs", "/mnt/reg", "-o", "rw,nodev,_netdev,x-systemd.automount,"
            "cache_dir=/var/cache/regfs,allow_other,insecure_registry=h:5000,"
            "insecure_registry=k:5000,allow_redirect_to=cdn.lan,timeout=7", "-n"]  # fmt: skip
    assert mount_arguments(argv) == [
        "mount", "/mnt/reg", "--cache-dir", "/var/cache/regfs", "--allow-other",
        "--insecure-registry", "h:5000", "--insecure-registry", "k:5000",
        "--allow-redirect-to", "cdn.lan", "--timeout", "7",
    ]  # fmt: skip


def test_options_joined_to_o_and_no_options_at_all() -> None:
    assert mount_arguments(["regfs", "/m", "-oallow_other"]) == ["mount", "/m", "--allow-other"]
    assert mount_arguments(["regfs", "/m"]) == ["mount", "/m"]


@pytest.mark.parametrize(
    "argv",
    [["regfs", "/m", "-o", "cache_dri=/x"], ["regfs", "/m", "-o", "allow_other=yes"],
     ["regfs", "/m", "-o", "timeout"], ["/m"], ["regfs", "/m", "-o"]],
)  # fmt: skip
def test_what_regfs_does_not_know_stops_the_mount(argv: list[str]) -> None:
    with pytest.raises(ValueError):
        mount_arguments(argv)


def test_the_soci_v1_switch_is_a_flag_both_ways() -> None:
    on = mount_arguments(["regfs", "/m", "-o", "soci_v1_referrers"])
    assert on == ["mount", "/m", "--soci-v1-referrers"]
    off = mount_arguments(["regfs", "/m", "-o", "no_soci_v1_referrers"])
    assert off == ["mount", "/m", "--no-soci-v1-referrers"]


def _long_options_of_regfs_mount() -> list[argparse.Action]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in commands.choices["mount"]._actions if a.option_strings]


def test_every_long_option_of_regfs_mount_is_an_fstab_option() -> None:
    """The docs promise regfs's long options with ``_`` for ``-``; ``background_fetch``
    was once refused as unknown. ``foreground`` alone is not one (mount(8) would wait)."""
    for action in _long_options_of_regfs_mount():
        long = next(o for o in action.option_strings if o.startswith("--"))
        if long in ("--help", "--foreground"):
            continue
        for option in action.option_strings if action.nargs == 0 else [long]:
            name = option[2:].replace("-", "_")
            given = name if action.nargs == 0 else f"{name}=7"
            expected = [option] if action.nargs == 0 else [option, "7"]
            assert mount_arguments(["regfs", "/m", "-o", given]) == ["mount", "/m", *expected]
    with pytest.raises(ValueError, match="unknown regfs mount option 'foreground'"):
        mount_arguments(["regfs", "/m", "-o", "foreground"])
