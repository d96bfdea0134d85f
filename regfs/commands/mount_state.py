"""Asking a running mount for its state (its root's ``user.regfs.status``), waiting a
bounded time.

Application layer (``regfs status``, ``regfs cache stats``). A daemon that answers nothing
(stopped by SIGSTOP or a debugger, or wedged) keeps a getxattr waiting in the kernel for
good, and no signal short of SIGKILL ends that wait: the question is asked from a daemon
thread and abandoned when the wait is over; the command's exit ends the thread.
"""

from __future__ import annotations

import errno
import os
import threading

from regfs.tree.xattrs import STATUS_XATTR

STATUS_WAIT = 10.0
"""Seconds to wait for a mount's state. The daemon answers from memory, but a request
waits for one of its FUSE workers, which all may wait on registries for a while."""


def mount_state(path: str, wait: float = STATUS_WAIT) -> bytes:
    """The JSON state of the regfs mount at ``path``; OSError if it cannot be asked (not
    regfs, a dead daemon), TimeoutError if it does not answer within ``wait`` seconds."""
    answers: list[bytes | OSError] = []

    def ask() -> None:
        try:
            answers.append(os.getxattr(path, STATUS_XATTR))
        except OSError as error:
            answers.append(error)

    asker = threading.Thread(target=ask, name="regfs-status", daemon=True)
    asker.start()
    asker.join(wait)
    if not answers:
        message = f"no answer within {wait:g} s: the daemon is stopped or overloaded"
        raise TimeoutError(errno.ETIMEDOUT, message)
    answer = answers[0]
    if isinstance(answer, OSError):
        raise answer
    return answer
