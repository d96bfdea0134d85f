"""``regfs umount``: fusermount3, and its lazy form for a mount whose daemon was killed.

Application layer. A module of its own so that unmounting imports neither pyfuse3 nor trio.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from regfs.commands.mountpoint import (
    REGFS_TYPE,
    MountpointError,
    canonical,
    is_dead_mount,
    mounted_type,
)


def umount(args: argparse.Namespace) -> int:
    try:
        mountpoint = canonical(args.mountpoint)
    except MountpointError as error:
        print(f"regfs: {error}", file=sys.stderr)
        return 1
    # The mount table first: a stat of the mountpoint waits for good on a daemon that
    # answers nothing (stopped), which fusermount3 unmounts at once.
    fs_type = mounted_type(mountpoint)
    if fs_type is None and not is_dead_mount(mountpoint):
        print(f"regfs: {mountpoint} is not mounted", file=sys.stderr)
        return 1
    if fs_type not in (None, REGFS_TYPE):  # as root, fusermount3 unmounts anything
        print(f"regfs: {mountpoint} is a {fs_type} mount, not regfs", file=sys.stderr)
        return 1
    command = ["fusermount3", "-u", mountpoint]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 and is_dead_mount(mountpoint):
        # A daemon killed with -9 can leave a mount that a plain unmount calls busy.
        result = subprocess.run([*command, "-z"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"regfs: {result.stderr.strip() or 'fusermount3 failed'}", file=sys.stderr)
        return 1
    return 0
