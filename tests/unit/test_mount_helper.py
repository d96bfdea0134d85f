"""mount(8)'s helper convention turned into ``regfs mount`` arguments."""

from __future__ import annotations

import pytest

from regfs.commands.mount_helper import mount_arguments


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
