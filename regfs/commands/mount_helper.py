"""``mount.fuse.regfs``: what mount(8), fstab and systemd ``.mount`` units run.

Application layer. ``mount -t fuse.regfs regfs /mnt/reg -o OPTIONS``
runs ``mount.fuse.regfs regfs /mnt/reg -o OPTIONS`` (util-linux looks for
``/sbin/mount.<type>``; ``scripts/install.sh`` links it there). The source is a label
(write ``regfs``); the options are regfs's own long options with ``_`` for ``-``
(``cache_dir=/var/cache/regfs``, ``allow_other``, ``timeout=10``,
``insecure_registry=host:port`` and ``allow_redirect_to=host``, repeatable), beside the
generic ones mount(8) and systemd pass on (``rw``, ``nodev``, ``_netdev``, ``x-systemd.*``
…), which are left to them. The mount is then made by ``regfs mount``, which returns once
it is live. Which options regfs has is read from ``regfs mount``'s own parser, so that
every option it gains is an fstab option too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from regfs.commands import mount
from regfs.commands.parser import build_parser

NOT_FROM_FSTAB = frozenset({"help", "foreground"})
"""``regfs mount`` options no fstab line may give: mount(8) waits for the helper, which a
foreground mount would hold for ever (``regfs.service`` runs ``--foreground`` itself)."""


def _fstab_options() -> tuple[frozenset[str], frozenset[str]]:
    """``regfs mount``'s long options as fstab spells them (``_`` for ``-``): the flags,
    and those that take a value."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags: set[str] = set()
    valued: set[str] = set()
    for action in commands.choices["mount"]._actions:
        for option in action.option_strings:
            name = option.removeprefix("--").replace("-", "_")
            if option.startswith("--") and name not in NOT_FROM_FSTAB:
                (flags if action.nargs == 0 else valued).add(name)
    return frozenset(flags), frozenset(valued)


FLAGS, VALUED = _fstab_options()

GENERIC = frozenset({
    "rw", "ro", "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group",
    "nofail", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "atime", "noatime",
    "relatime", "norelatime", "strictatime", "lazytime", "nodiratime", "sync", "async",
    "_netdev", "comment", "default_permissions",
})  # fmt: skip
"""Options mount(8) and systemd pass to every helper: the mount is always read-only,
nosuid and nodev, whatever they say."""


def mount_arguments(argv: Sequence[str]) -> list[str]:
    """``regfs mount`` arguments for ``SOURCE MOUNTPOINT [-o OPTIONS] [-n -s -f -v …]``.

    ValueError for an option regfs does not know: a typo in fstab should stop the mount,
    not be ignored.
    """
    positional: list[str] = []
    options: list[str] = []
    words = list(argv)
    while words:
        word = words.pop(0)
        if word == "-o":
            if not words:
                raise ValueError("-o needs a value")
            options += [option for option in words.pop(0).split(",") if option]
        elif word.startswith("-o") and len(word) > 2:
            options += [option for option in word[2:].split(",") if option]
        elif word.startswith("-"):
            continue  # -n (no mtab), -s (sloppy), -f (fake), -v: mount(8)'s business
        else:
            positional.append(word)
    if len(positional) != 2:
        raise ValueError("usage: mount.fuse.regfs SOURCE MOUNTPOINT [-o OPTIONS]")
    arguments = ["mount", positional[1]]
    for option in options:
        name, _, value = option.partition("=")
        if name in GENERIC or name.startswith("x-"):
            continue
        if name in FLAGS and not value:
            arguments.append(f"--{name.replace('_', '-')}")
        elif name in VALUED and value:
            arguments += [f"--{name.replace('_', '-')}", value]
        else:
            raise ValueError(f"unknown regfs mount option {option!r}")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    try:
        arguments = mount_arguments(sys.argv[1:] if argv is None else argv)
    except ValueError as error:
        print(f"mount.fuse.regfs: {error}", file=sys.stderr)
        return 1
    return mount.mount(build_parser().parse_args(arguments))


if __name__ == "__main__":
    sys.exit(main())
