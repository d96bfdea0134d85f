"""The one place failures become errnos (``regfs/fuse/errors.py``): each domain error its
errno, as ``regfs/domain/errors.py`` draws the tree; one log line per failure; nothing but
``FUSEError`` leaves a handler. Autojump clock."""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import cachetools
import pyfuse3
import pytest
import trio

from regfs.domain import errors as domain_errors
from regfs.domain.errors import NotFound, ReadOnly, RegfsError
from regfs.fuse import errors as fuse_errors
from regfs.fuse.errors import errno_for
from regfs.fuse.operations import Operations
from regfs.tree.node import Directory, File, Kind, Stat, Symlink
from tests.support.crafted import directory, gzip_layer, member
from tests.support.fuse_harness import CONTEXT, HOST, Kernel, ReaddirToken, errno_of
from tests.support.memory_registry import MemoryRegistry, sha256

DRAWN = re.compile(r"── (?P<error>\w+)\s.*→ (?P<errno>E[A-Z]+)")
ERRORS = {
    match["error"]: getattr(errno, match["errno"])
    for match in DRAWN.finditer(domain_errors.__doc__ or "")
}
"""Each domain error and its errno, as ``regfs/domain/errors.py`` draws them."""
LAYER = gzip_layer(directory("etc/"), member("etc/hostname", b"regfs\n"))


@pytest.fixture(autouse=True)
def fresh_log_memory(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Failures logged by earlier tests are not this test's repeats; every level kept."""
    quiet: cachetools.TTLCache[str, None] = cachetools.TTLCache(1024, fuse_errors.REPEAT_QUIET)
    monkeypatch.setattr(fuse_errors, "_recently_logged", quiet)
    caplog.set_level(logging.DEBUG, logger="regfs.fuse")


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    """What the FUSE layer logged at ``level`` or above."""
    return [r.getMessage() for r in caplog.records if r.name == "regfs.fuse" and r.levelno >= level]


def test_the_map_is_the_tree_drawn_in_the_domain_errors() -> None:
    every = {
        name
        for name, value in vars(domain_errors).items()
        if isinstance(value, type) and issubclass(value, RegfsError) and value is not RegfsError
    }
    assert set(ERRORS) == every, "each domain error is drawn with its errno"
    for name, number in ERRORS.items():
        assert errno_for(getattr(domain_errors, name)("x")) == number, name


class Failing(Directory, File, Symlink):
    """A node whose every question fails with ``error``."""

    key = ("failing",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def stat(self) -> Stat:
        if isinstance(self.error, RegfsError):  # a dir the kernel can look into
            return Stat(Kind.DIRECTORY, 0, 0o555, immutable=False)
        raise self.error

    async def fail(self, *args: object) -> None:
        raise self.error

    lookup = entries = xattrs = read = target = fail  # type: ignore[assignment]


def handlers(operations: Operations) -> dict[str, Callable[[], Awaitable[object]]]:
    """Each handler a kernel may call on the root, as it would."""
    root = pyfuse3.InodeT(1)
    return {
        "lookup": lambda: operations.lookup(root, pyfuse3.FileNameT(b"name"), CONTEXT),
        "getattr": lambda: operations.getattr(root, CONTEXT),
        "readdir": lambda: operations.readdir(pyfuse3.FileHandleT(1), 0, ReaddirToken(9)),  # type: ignore[arg-type]
        "read": lambda: operations.read(pyfuse3.FileHandleT(1), 0, 10),
        "readlink": lambda: operations.readlink(root, CONTEXT),
        "getxattr": lambda: operations.getxattr(root, pyfuse3.XAttrNameT(b"user.x"), CONTEXT),
        "listxattr": lambda: operations.listxattr(root, CONTEXT),
    }


@pytest.mark.parametrize("error", sorted(ERRORS))
async def test_a_domain_error_is_its_errno_and_one_warning_a_minute(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture, error: str
) -> None:
    """NotFound is the expected answer to most lookups, ReadOnly to any write: logged at
    DEBUG only."""
    failure = getattr(domain_errors, error)(f"{error} of example.com/app")
    operations = Operations(Failing(failure), metadata_ttl=60)
    for _ in range(2):  # the kernel retries a failed read: the same cause, logged once
        assert await errno_of(handlers(operations)["lookup"]) == ERRORS[error]
    expected = [] if isinstance(failure, NotFound | ReadOnly) else [f"lookup: {failure}"]
    assert lines(caplog) == expected
    assert all(record.exc_info is None for record in caplog.records)


WRITES = ("create", "rmdir", "mknod", "mkdir", "symlink", "link", "unlink", "rename",
          "setattr", "write", "setxattr", "removexattr")  # fmt: skip


@pytest.mark.parametrize("handler", WRITES)
async def test_every_kind_of_write_is_erofs_from_the_daemon(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture, handler: str
) -> None:
    """A layer store's mount is not ``ro`` (podman's counting must reach it): the daemon
    refuses each write itself, quietly; a plain directory node refuses create and rmdir."""
    plain = Directory()
    plain.key = ("plain",)
    operations = Operations(plain, metadata_ttl=60)
    arguments = {"create": (1, b"use", 0o644, os.O_CREAT, CONTEXT), "rmdir": (1, b"x", CONTEXT)}
    request = getattr(operations, handler)(*arguments.get(handler, (1, b"x", CONTEXT)))
    assert await errno_of(lambda: request) == errno.EROFS
    assert lines(caplog) == []


@pytest.mark.parametrize("handler", ["lookup", "getattr", "readdir", "read", "readlink",
                                     "getxattr", "listxattr"])  # fmt: skip
async def test_an_unexpected_exception_is_eio_with_one_traceback(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture, handler: str
) -> None:
    operations = Operations(Failing(RuntimeError("a bug")), metadata_ttl=60)
    assert await errno_of(handlers(operations)[handler]) == errno.EIO
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.getMessage() == f"{handler}: unexpected failure" and record.exc_info


async def test_a_full_or_read_only_cache_dir_is_eio_said_in_one_line_no_traceback(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The cache dir's disk is no bug of the daemon: a read that cannot keep what it
    fetched says why once, and what it says names the file."""
    full = OSError(errno.ENOSPC, "No space left on device", "/var/cache/regfs/tmp/blob")
    operations = Operations(Failing(full), metadata_ttl=60)
    for _ in range(2):
        assert await errno_of(handlers(operations)["read"]) == errno.EIO
    assert lines(caplog) == [
        "read: the cache dir: [Errno 28] No space left on device: '/var/cache/regfs/tmp/blob'"
    ]
    assert all(record.exc_info is None for record in caplog.records)


async def test_a_file_error_that_is_no_disk_s_is_a_bug_with_its_traceback(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/chunks/ab")
    operations = Operations(Failing(missing), metadata_ttl=60)
    assert await errno_of(handlers(operations)["read"]) == errno.EIO
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.getMessage() == "read: unexpected failure" and record.exc_info


async def test_a_dir_that_vanished_is_eio_to_readdir_not_the_end_of_its_listing(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """glibc takes ENOENT from getdents for the end of a listing: ``ls`` would show an
    empty dir instead of an error."""
    operations = Operations(Failing(NotFound("example.com/app: gone")), metadata_ttl=60)
    assert await errno_of(handlers(operations)["readdir"]) == errno.EIO
    assert lines(caplog) == ["readdir: cannot be listed: example.com/app: gone"]


async def test_an_errno_chosen_by_a_handler_passes_unchanged(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    registry.push("app", "1", [LAYER])
    operations = kernel.operations
    tag = await kernel.inode(f"{HOST}/app/1")
    assert await errno_of(lambda: kernel.readdir(tag)) == errno.ENOTDIR
    assert await errno_of(lambda: operations.open(tag, 0, CONTEXT)) == errno.EINVAL
    image = await kernel.inode(f"{HOST}/app/{(await kernel.readlink(f'{HOST}/app/1')).decode()}")
    assert await errno_of(lambda: operations.open(image, 0, CONTEXT)) == errno.EISDIR
    assert await errno_of(lambda: operations.open(image, os.O_RDWR, CONTEXT)) == errno.EROFS
    assert lines(caplog) == []


async def test_a_link_target_longer_than_the_kernel_takes_is_enametoolong(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Linux takes a symlink target of at most 4095 bytes (PATH_MAX, less its NUL), and
    no filesystem holds a longer one (``ln -s`` and ``tar -x`` fail: "File name too
    long"); a tar may carry one. Its readlink was EIO, after pyfuse3 logged an ERROR
    that the kernel refused the answer."""
    layer = gzip_layer(
        member("longest", None, type=tarfile.SYMTYPE, linkname="x" * 4095),
        member("too-long", None, type=tarfile.SYMTYPE, linkname="y" * 4096),
    )
    image = f"{HOST}/app/{registry.push('app', '1', [layer]).replace(':', '-')}"
    for tree in (f"{image}/0", f"{image}/rootfs"):
        assert await kernel.readlink(f"{tree}/longest") == b"x" * 4095
        too_long = functools.partial(kernel.readlink, f"{tree}/too-long")
        assert await errno_of(too_long) == errno.ENAMETOOLONG
    assert lines(caplog) == []


@pytest.mark.parametrize("failure", [("500", "HTTP 500"), ("stall", "no answer within 5s")])
async def test_a_registry_that_fails_is_eio_said_in_one_line(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel,
    caplog: pytest.LogCaptureFixture, failure: tuple[str, str],
) -> None:  # fmt: skip
    """Retries and the request's deadline pass in virtual time; then one line says why
    (and of a registry that answered nothing, one more for the seconds it is given since)."""
    how, said = failure
    registry.push("broken", "1", [LAYER])
    if how == "stall":
        registry.stalled.add("broken")
    else:
        registry.fail("broken", int(how))
    for _ in range(3):
        assert await errno_of(lambda: kernel.lookup(f"{HOST}/broken/1")) == errno.EIO
    line, *after = lines(caplog)
    assert line.startswith("lookup: ") and said in line and "/v2/broken/" in line
    if how == "stall":  # the registry is left alone a while, said once
        assert after == [f"lookup: {HOST} answered nothing in 5s, nor in 2s a request since"]
    else:
        assert after == []


async def test_a_manifest_that_is_not_its_digest_is_eio_naming_it(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    digest = registry.push("app", "1", [LAYER])
    manifests = registry.repositories["app"].manifests
    raw, media_type = manifests[digest]
    manifests[digest] = (raw.replace(b'"schemaVersion": 2', b'"schemaVersion":2'), media_type)
    image = f"{HOST}/app/{digest.replace(':', '-')}"
    assert await errno_of(lambda: kernel.lookup(image)) == errno.EIO
    (line,) = lines(caplog)
    assert digest in line


async def test_a_layer_that_is_not_its_digest_is_eio_naming_it_once(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Nothing of a layer is shown before its whole blob was checked."""
    digest = registry.push("app", "1", [LAYER])
    blobs = registry.repositories["app"].blobs
    damaged = bytearray(LAYER)
    damaged[-5] ^= 1  # the same length: read to its end, then found to differ
    blobs[sha256(LAYER)] = bytes(damaged)
    rootfs = await kernel.inode(f"{HOST}/app/{digest.replace(':', '-')}/rootfs")
    for _ in range(2):
        assert await errno_of(lambda: kernel.readdir(rootfs)) == errno.EIO
    (line,) = lines(caplog)
    assert line.startswith("readdir: ") and sha256(LAYER) in line


async def test_a_request_s_registry_calls_share_its_timeout(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, tmp_path: Path
) -> None:
    """``--timeout 3`` and a registry that takes 2 s per answer: a lookup of a missing
    name, which asks for the tag and then whether ``slow/2`` is a repository, fails after
    3 s in all."""
    registry.push("slow", "1", [LAYER])
    registry.delay = 2
    kernel = Kernel(registry, tmp_path, request_timeout=3)
    try:
        start = trio.current_time()
        assert await errno_of(lambda: kernel.lookup(f"{HOST}/slow/2")) == errno.EIO
        assert trio.current_time() - start == pytest.approx(3)
        assert registry.requests["HEAD manifests slow 2"] == 1
        assert registry.requests["GET tags slow/2 list"] == 1
    finally:
        kernel.close()
