"""``regfs mount``: the daemon and the FUSE lifecycle.

Application layer: the only command that opens the root nursery (and runs the trio loop
for as long as the mount lives).
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from regfs import __version__
from regfs.commands import allocator, common, daemon
from regfs.commands.mountpoint import MountpointError, canonical, check_can_mount
from regfs.commands.services import MountServices
from regfs.domain.errors import MalformedContent
from regfs.fuse.errors import IN_FLIGHT
from regfs.fuse.operations import Operations, kernel_caching
from regfs.registry.config import ClientConfig
from regfs.registry.credentials import DockerCredentials, auth_file_paths
from regfs.tree.context import TreeContext
from regfs.tree.layer_usage import LayerUsage
from regfs.tree.namespace import Root
from regfs.tree.node import Directory

log = logging.getLogger("regfs")

MAX_FUSE_TASKS = 64
"""Kernel requests served at once; most wait on the network, so more than cores."""
SWITCH_INTERVAL = 0.0005
"""Seconds a thread holds the GIL while another waits for it (Python's default: 0.005).
While a worker thread indexes, inflates or hashes, the event loop gives up the GIL at
every system call and waits this long to get it back: at the default, a small layer's
index took 0.38 s beside a big one's instead of 0.015 s, and FUSE answers waited too."""


def _default_log_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "regfs" / "regfs.log"


def _mount_options(*, allow_other: bool, layer_store: bool) -> set[str]:
    """nosuid and nodev: an image's setuid binaries and device nodes must not act on the
    host (overlayfs above a layer store applies its own mount's options). A layer store is
    not ``ro``: podman's reference counting must reach the daemon, which refuses writes."""
    options = set(pyfuse3.default_options) | {"nosuid", "nodev"}
    if not layer_store:
        options.add("ro")
    options |= {"fsname=regfs", "subtype=regfs"}
    if allow_other:
        options.add("allow_other")
    return options


def serve(
    args: argparse.Namespace, config: ClientConfig, mountpoint: str, ready: Callable[[], None]
) -> int:
    """Mount, call ``ready``, serve until unmounted or signalled; 0 on a clean exit."""
    allocator.limit_retention()  # before any worker thread exists
    # Absolute: auth files are read again when they change, and the daemon's cwd is "/".
    auth_paths = [path.absolute() for path in auth_file_paths(os.environ, args.auth_file)]
    credentials = DockerCredentials(auth_paths, helper_timeout=args.timeout)
    services = MountServices(args, config, credentials)
    aliases = frozenset(config.aliases)
    usage = LayerUsage() if args.layer_store else None
    status = functools.partial(mount_status, args, mountpoint, services, usage=usage)
    context = TreeContext(services, args.platform, time.time_ns(), aliases, status)
    root: Directory = Root(context) if usage is None else _store_root(context, usage)
    operations = Operations(root, metadata_ttl=args.metadata_ttl, request_timeout=args.timeout,
                            writable_mount=usage is not None)  # fmt: skip
    options = _mount_options(allow_other=args.allow_other, layer_store=usage is not None)
    _fuse_init(operations, mountpoint, options)
    what = "a layer store" if usage is not None else "registries"
    log.info("mounted %s at %s (regfs %s, platform %s)", what, mountpoint, __version__,
             args.platform)  # fmt: skip
    log.info("credentials from the first of: %s", ", ".join(map(str, credentials.paths)))
    if config.registries.sources:
        log.info("registries.conf: %s", ", ".join(config.registries.sources))
    os.chdir("/")  # the caller's dir may be unmounted or removed while the mount lives
    ready()
    sys.setswitchinterval(SWITCH_INTERVAL)
    common.tune_garbage_collection()
    clean = False
    try:
        trio.run(_main_loop, services, operations)
        clean = True
    finally:
        services.close_layers()
        pyfuse3.close(unmount=clean)
        log.info("unmounted %s", mountpoint)
    return 0


def _fuse_init(operations: Operations, mountpoint: str, options: set[str]) -> None:
    """``pyfuse3.init``, failing with what libfuse and fusermount3 said. They say why only
    on fd 2 (``mount failed: Operation not permitted``, no ``/dev/fuse``, ``allow_other``
    not allowed by /etc/fuse.conf), which a daemon has pointed at /dev/null, while pyfuse3
    raises just ``fuse_session_mount failed``: fd 2 is caught in a file meanwhile."""
    with tempfile.TemporaryFile() as said:
        saved = os.dup(2)
        os.dup2(said.fileno(), 2)
        try:
            pyfuse3.init(operations, mountpoint, options)
        except RuntimeError as error:
            failure: RuntimeError | None = error
        else:
            failure = None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        said.seek(0)
        words = said.read().decode(errors="replace").strip()
    if failure is not None:
        raise daemon.StartFailed(f"cannot mount: {words or failure}")
    if words:
        log.warning("libfuse at mount: %s", words)


def _store_root(context: TreeContext, usage: LayerUsage) -> Directory:
    """A layer store's root; its module (the layer readers with it) imported only for one."""
    from regfs.tree.store import StoreRoot

    return StoreRoot(context, usage)


def mount_status(
    args: argparse.Namespace,
    mountpoint: str,
    services: MountServices,
    *,
    usage: LayerUsage | None,
) -> dict[str, object]:
    """The mount's state as ``regfs status`` shows it (the root's ``user.regfs.status``);
    a layer store's, with the layers podman uses."""
    client, layers = services.client, services.layers
    last_answers = services().metadata.last_answers
    reads = layers.pieces.reads
    state: dict[str, object] = {
        "mountpoint": mountpoint,
        "pid": os.getpid(),
        "version": __version__,
        "options": {
            "platform": str(args.platform), "timeout": args.timeout,
            "metadata_ttl": args.metadata_ttl, "allow_other": args.allow_other,
            "soci_v1_referrers": args.soci_v1_referrers,
            "kernel_caching": kernel_caching(opens_reach_the_daemon=usage is not None),
            "stale": args.stale,
            "max_stale": None if math.isinf(args.max_stale) else args.max_stale,
            "record_reads": None if args.record_reads is None else str(args.record_reads),
        },
        "cache": {
            "dir": str(args.cache_dir), "size_limit": args.cache_size,
            "size": layers.cache_usage(),
            "chunk_reads": {"memory": reads.memory, "disk": reads.disk,
                            "fetched": reads.fetched},
        },
        "registries": {
            host: {"requests": stats.requests, "last_error": stats.last_error,
                   "last_error_at": stats.last_error_at}
            for host, stats in sorted(client.hosts().items())
        },
        "unreachable": layers.by_digest.reach.unreachable(),
        "stale_answers": {"now": len(last_answers.stale_questions()),
                          "served": last_answers.served_stale},
        "requests_in_flight": max(IN_FLIGHT[0] - 1, 0),  # less the one asking
    }  # fmt: skip
    if usage is not None:
        state["layer_store"] = {"layers_in_use": usage.in_use()}
    return state


async def _main_loop(services: MountServices, operations: Operations) -> None:
    async with trio.open_nursery() as nursery:
        services.serve_in(nursery)
        nursery.start_soon(services.warm_up)
        nursery.start_soon(_terminate_on_signal)
        nursery.start_soon(operations.invalidator.run)
        await pyfuse3.main(min_tasks=4, max_tasks=MAX_FUSE_TASKS)
        nursery.cancel_scope.cancel()
    await services.aclose_client()


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("received %s: unmounting", signal.Signals(signum).name)
            daemon.notify_systemd(b"STOPPING=1")
            pyfuse3.terminate()
            return


def mount(args: argparse.Namespace) -> int:
    if not common.cache_dir_ready(args):
        return 1
    try:
        mountpoint = canonical(args.mountpoint)
        check_can_mount(mountpoint)
        config = common.client_config(args)  # a broken file must stop the mount, here
        args.soci_v1_referrers = common.soci_v1_referrers(args)
        if args.record_reads is not None:  # the daemon opens it: fail here, not there
            args.record_reads.open("a").close()
    except (MountpointError, MalformedContent, OSError) as error:
        print(f"regfs: {error}", file=sys.stderr)
        return 1
    if args.foreground:  # e.g. under systemd (Type=notify): ready once the mount is live
        common.configure_logging(args.log_file, debug=args.debug)
        try:
            return serve(args, config, mountpoint, lambda: daemon.notify_systemd(b"READY=1"))
        except daemon.StartFailed as error:
            print(f"regfs: {error}", file=sys.stderr)
            return 1
    common.configure_logging(args.log_file or _default_log_file(), debug=args.debug)
    return daemon.run_in_background(lambda ready: serve(args, config, mountpoint, ready))
