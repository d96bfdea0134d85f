"""Running the mount in the background, and telling the caller once it is live.

Application layer (``commands/mount.py``). The parent forks before any thread or trio loop
exists; the child detaches, mounts, and writes ``ready`` (or the reason it failed) to a
pipe that the parent reads, so ``regfs mount`` returns only when the mount can be used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)

READY = b"ready"


class StartFailed(Exception):
    """The daemon could not start, for a reason its message says in full (fusermount3's
    refusal): one log line and the caller's one stderr line, no traceback."""


def run_in_background(serve: Callable[[Callable[[], None]], int]) -> int:
    """Fork; the child runs ``serve(ready)``; the parent exits 0 once ``ready`` is called,
    or returns 1 if the child failed first."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read()
        if message == READY:
            # Nothing of the parent's needs tearing down: skipping Python's (~40 ms of
            # freeing every module) returns the prompt sooner
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        text = message.decode(errors="replace").strip()
        print(f"regfs: {text or 'the daemon exited before the mount was ready'}", file=sys.stderr)
        return 1
    os.close(read_end)
    os.setsid()
    _detach_standard_streams()
    _close_inherited_descriptors()

    def ready() -> None:
        os.write(write_end, READY)
        os.close(write_end)

    code = 1
    try:
        code = serve(ready)
    except BaseException as error:  # the parent must hear about any failure, even SystemExit
        if isinstance(error, StartFailed):
            log.error("%s", error)
        else:
            log.exception("daemon failed")
        with contextlib.suppress(OSError):  # already reported ready: the log has it
            os.write(write_end, str(error).encode())
    finally:
        logging.shutdown()
        os._exit(code)


def _detach_standard_streams() -> None:
    """Point stdin/out/err at /dev/null so the caller's pipes and terminal are released."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _close_inherited_descriptors() -> None:
    """Close what the caller left open beyond the standard streams (a script's ``exec
    3>&1``, a CI runner's log pipe): a reader of such a pipe waits for every writer, so
    ``$(regfs mount …)`` would wait until the unmount. Python opens its own descriptors
    non-inheritable (PEP 446), so the inheritable ones are exactly the caller's."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
            if fd > 2 and os.get_inheritable(fd):
                os.close(fd)


def notify_systemd(state: bytes) -> None:
    """Tell the service manager ``state`` (``READY=1``, ``STOPPING=1``) if one listens
    (``Type=notify`` units set ``NOTIFY_SOCKET``); the sd_notify protocol, without libsystemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or address[0] not in "/@":
        return
    if address[0] == "@":  # an abstract socket
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(state, address)
