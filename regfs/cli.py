"""``regfs mount`` and ``regfs umount``: arguments, logging, the daemon and the FUSE lifecycle.

Top level: the only module that wires the layers together and the only one that starts
the trio loop (and its root nursery).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pyfuse3
import trio

from regfs import __version__
from regfs.cache.directory import UnsafeCacheDir, prepare_cache_dir
from regfs.commands import allocator, daemon
from regfs.commands import cache as cache_commands
from regfs.commands.docs import bash_completion
from regfs.commands.index_push import Pushed, push_index
from regfs.commands.mountpoint import MountpointError, check_can_mount, is_dead_mount, mounted_type
from regfs.commands.prefetch import Outcome, target_of
from regfs.commands.prefetch import prefetch as fetch_images
from regfs.commands.status import format_cache_stats, format_status, human_size
from regfs.domain.errors import MalformedContent, RegfsError
from regfs.domain.platform import Platform, host_platform
from regfs.domain.reference import parse_image_reference
from regfs.fuse.errors import IN_FLIGHT
from regfs.fuse.operations import Operations, kernel_caching
from regfs.layers.blobs import LayerStore
from regfs.layers.ztoc_builder import DEFAULT_SPAN_SIZE
from regfs.registry.aliases import RegfsConfig, parse_config
from regfs.registry.client import ClientConfig, RegistryClient
from regfs.registry.credentials import DockerCredentials, auth_file_paths
from regfs.registry.images import resolve_image
from regfs.registry.settings import load_registries_conf
from regfs.registry.tls import TlsSettings, certs_dirs
from regfs.tree.context import TreeContext
from regfs.tree.metadata import MetadataLimits, RegistryMetadata
from regfs.tree.namespace import STATUS_XATTR, Root

log = logging.getLogger("regfs")
T = TypeVar("T")

MAX_FUSE_TASKS = 64
"""Kernel requests served at once; most wait on the network, so more than cores."""


def _default_log_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "regfs" / "regfs.log"


def _default_config_file() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config) / "regfs" / "config.toml"


def load_config(args: argparse.Namespace) -> RegfsConfig:
    """The settings of ``--config`` (which must exist) or of the default file (if it does)."""
    path = args.config or _default_config_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        if args.config is not None:
            raise MalformedContent(f"{path}: no such file") from None
        return RegfsConfig()
    except OSError as error:
        raise MalformedContent(f"{path}: {error.strerror}") from None
    return parse_config(text, str(path))


CACHE_DIR_DEFAULT = "$XDG_CACHE_HOME/regfs, or ~/.cache/regfs"
"""``_default_cache_dir`` for ``--help`` and the man page, which is shipped built: it
cannot name the home of the machine that built it."""


def _default_cache_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "regfs"


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str) -> int:
    """``10G``, ``512M``, ``1T`` or plain bytes (binary units, an optional ``iB``/``B``)."""
    number = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = number[-1:] if number[-1:] in _SIZE_UNITS else ""
    try:
        value = float(number[: len(number) - len(unit)]) * _SIZE_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 10G, 512M)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"negative size: {text!r}")
    return int(value)


def parse_size(text: str) -> int:
    """A cache size: bytes as ``parse_bytes`` reads them, at least 64 MiB."""
    value = parse_bytes(text)
    if value < 64 << 20:
        raise argparse.ArgumentTypeError(f"cache size {text!r} is below the 64M minimum")
    return value


def _span_size(text: str) -> int:
    value = parse_bytes(text)
    if not 64 << 10 <= value <= 64 << 20:
        raise argparse.ArgumentTypeError(f"span size {text!r} is not within 64K and 64M")
    return value


def _platform(text: str) -> Platform:
    try:
        return Platform.parse(text)
    except MalformedContent as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _add_registry_options(command: argparse.ArgumentParser) -> None:
    """Options of every command that talks to registries."""
    command.add_argument(
        "--platform",
        type=_platform,
        default=host_platform(),
        help="os/arch[/variant] an index dir shows by default (default: this machine's)",
    )
    command.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST",
        help="speak plain http to HOST[:PORT] (loopback always is); repeatable",
    )
    command.add_argument(
        "--allow-redirect-to",
        action="append",
        default=[],
        metavar="HOST",
        help="let registries send regfs to HOST[:PORT] (redirects, foreign layer URLs, token "
        "realms) even on a loopback, private or link-local address they may not send it "
        "to otherwise; repeatable",
    )
    command.add_argument(
        "--auth-file",
        type=Path,
        metavar="PATH",
        help="credentials (docker config.json or podman auth.json form) to use instead of "
        "the usual search: REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, "
        "~/.config/containers/auth.json, ~/.docker/config.json",
    )
    command.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="regfs's own settings: aliases for registries below a path prefix, SOCI v1 "
        "referrers (default: $XDG_CONFIG_HOME/regfs/config.toml, or "
        "~/.config/regfs/config.toml)",
    )
    command.add_argument(
        "--timeout",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="deadline for one registry call, retries included (default: 30)",
    )


def _add_soci_option(command: argparse.ArgumentParser) -> None:
    """The option of the commands that read layers through SOCI indexes."""
    command.add_argument(
        "--soci-v1-referrers",
        action=argparse.BooleanOptionalAction,
        help="also read gzip layers through a SOCI v1 index found among the image's "
        "referrers (as `regfs index push` makes them): anyone who may push to the "
        "repository can add one, and no digest of the image covers it; a SOCI v2 index, "
        "named by the image manifest, is always used (default: the config file's "
        "[soci] v1-referrers, else off)",
    )


def _add_cache_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--cache-dir",
        type=Path,
        default=_default_cache_dir(),
        help=f"layer indexes and chunks, kept across mounts (default: {CACHE_DIR_DEFAULT})",
    )
    command.add_argument(
        "--cache-size",
        type=parse_size,
        default=10 << 30,
        metavar="SIZE",
        help="bound on the cache dir (chunks, layer indexes, blobs being indexed); "
        "least recently used go first (default: 10G)",
    )
    _add_shared_cache_option(command)


def _add_shared_cache_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--allow-shared-cache",
        action="store_true",
        help="use a cache dir that other users can write (they can change what mounts on "
        "it show); without it such a dir is refused, and a new one is made private",
    )


def _prepare_cache_dir(args: argparse.Namespace) -> bool:
    """Make or check ``args.cache_dir`` (``regfs.cache.directory``); False, with the reason
    on stderr, if it must not be used."""
    try:
        prepare_cache_dir(args.cache_dir, allow_shared=args.allow_shared_cache)
    except (UnsafeCacheDir, OSError) as error:
        print(f"regfs: {error}", file=sys.stderr)
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regfs", description="Browse container registries as a read-only filesystem."
    )
    parser.add_argument("--version", action="version", version=f"regfs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    mount = commands.add_parser("mount", help="mount registries at MOUNTPOINT")
    mount.add_argument("mountpoint", help="an empty directory")
    _add_registry_options(mount)
    mount.add_argument(
        "--metadata-ttl",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="how long catalogs, tag lists and tag targets are trusted (default: 60)",
    )
    _add_cache_options(mount)
    _add_soci_option(mount)
    mount.add_argument(
        "--verify-schema1-signatures",
        action="store_true",
        help="check the JWS signatures of schema1 manifests against their keys (jwk, x5c); "
        "digests are always verified",
    )
    mount.add_argument("--allow-other", action="store_true", help="let other users see the mount")
    mount.add_argument(
        "-f", "--foreground", action="store_true", help="stay in the foreground, log to stderr"
    )
    mount.add_argument(
        "--log-file",
        type=Path,
        help="where the daemon logs "
        "(default: $XDG_STATE_HOME/regfs/regfs.log, or ~/.local/state/regfs/regfs.log)",
    )
    mount.add_argument("--debug", action="store_true", help="log every request")

    umount = commands.add_parser("umount", help="unmount MOUNTPOINT (also a dead mount)")
    umount.add_argument("mountpoint")

    warm = commands.add_parser(
        "prefetch",
        help="bring whole images, or single layers, into the cache",
        description="Fetch, check and cache every layer of each IMAGE (a reference, or an "
        "image or layer dir under a regfs mount), with or without a mount running on the "
        "same cache dir. Exit 0 when all of it is cached and verified.",
    )
    warm.add_argument("images", nargs="+", metavar="IMAGE")
    _add_registry_options(warm)
    _add_cache_options(warm)
    _add_soci_option(warm)
    warm.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")

    completion = commands.add_parser(
        "completion",
        help="print the shell completion for regfs",
        description="Print the completion script: source <(regfs completion bash)",
    )
    completion.add_argument("shell", choices=["bash"])

    state = commands.add_parser("status", help="what a running mount at MOUNTPOINT is doing")
    state.add_argument("mountpoint")
    state.add_argument("--json", action="store_true", help="the whole state, as JSON")

    cache = commands.add_parser("cache", help="the cache dir: sizes, pruning, checking")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    for name, text in (
        ("stats", "sizes, each layer's cached share and the images it served, hit rates"),
        (
            "prune",
            "delete the least recently used chunks and indexes down to --max-size, "
            "or those of one --image",
        ),
        (
            "verify",
            "re-hash every stored chunk and delete damaged ones, and compare the TOC of "
            "each lazy layer with its tar where both are cached (exit 1 if any is wrong)",
        ),
    ):
        command = cache_commands.add_parser(name, help=text, description=text)
        command.add_argument(
            "--cache-dir",
            type=Path,
            default=_default_cache_dir(),
            help=f"the cache dir of the mounts (default: {CACHE_DIR_DEFAULT})",
        )
        _add_shared_cache_option(command)
        command.add_argument("--json", action="store_true", help="print JSON, for scripts")
        if name == "prune":
            command.add_argument("--max-size", type=parse_bytes, metavar="SIZE",
                                 help="evict the least recently used down to SIZE")  # fmt: skip
        if name in ("stats", "prune"):
            command.add_argument(
                "--image",
                metavar="IMAGE",
                help="HOST/REPOSITORY:TAG or @DIGEST: only that image's layers (the registry "
                "says which they are)",
            )
            _add_registry_options(command)

    index = commands.add_parser("index", help="SOCI indexes, for lazy reads of gzip layers")
    index_commands = index.add_subparsers(dest="index_command", required=True)
    push = index_commands.add_parser(
        "push",
        help="make a SOCI index of IMAGE and push it as its referrer",
        description="Download each gzip layer of IMAGE (of --platform, for an index), make "
        "its zTOC, and push them with a SOCI v1 index that refers to the image: mounts "
        "with --soci-v1-referrers (and soci-snapshotter with v1 enabled) then read those "
        "layers span by span. No digest of the image covers a v1 index; a SOCI v2 index "
        "(soci convert) is used by every mount.",
    )
    push.add_argument("image", help="HOST[:PORT]/REPOSITORY:TAG or HOST[:PORT]/REPOSITORY@DIGEST")
    _add_registry_options(push)
    push.add_argument(
        "--span-size",
        type=_span_size,
        default=DEFAULT_SPAN_SIZE,
        metavar="SIZE",
        help="uncompressed bytes between checkpoints: what one read fetches at least "
        "(default: 4M, as soci)",
    )
    push.add_argument(
        "--min-layer-size",
        type=parse_bytes,
        default=10 << 20,
        metavar="SIZE",
        help="smaller layers get no zTOC: reading them whole costs little (default: 10M, as soci)",
    )
    return parser


def configure_logging(log_file: Path | None, debug: bool) -> None:
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _client_config(args: argparse.Namespace) -> ClientConfig:
    """Where and how to reach registries, from the files docker and podman users already
    have; ``MalformedContent`` for one that does not parse. Read once, before the fork."""
    return ClientConfig(
        timeout=args.timeout,
        insecure_hosts=frozenset(args.insecure_registry),
        redirect_hosts=frozenset(args.allow_redirect_to),
        registries=load_registries_conf(os.environ),
        tls=TlsSettings(certs_dirs(os.environ)),
        aliases=load_config(args).aliases,
    )


def _soci_v1_referrers(args: argparse.Namespace) -> bool:
    """``--soci-v1-referrers`` or ``--no-soci-v1-referrers``, else the config file's
    ``[soci] v1-referrers``; ``MalformedContent`` for a file that does not parse."""
    if args.soci_v1_referrers is not None:
        return bool(args.soci_v1_referrers)
    return load_config(args).soci_v1_referrers


def _mount_options(allow_other: bool) -> set[str]:
    # nosuid and nodev: an image's setuid binaries and device nodes must not act on the host.
    options = set(pyfuse3.default_options) | {"ro", "nosuid", "nodev"}
    options |= {"fsname=regfs", "subtype=regfs"}
    if allow_other:
        options.add("allow_other")
    return options


def serve(
    args: argparse.Namespace, config: ClientConfig, mountpoint: str, ready: Callable[[], None]
) -> int:
    """Mount, call ``ready``, serve until unmounted or signalled; 0 on a clean exit."""
    allocator.limit_retention()  # before any worker thread exists
    auth_file = args.auth_file.absolute() if args.auth_file else None
    credentials = DockerCredentials(
        auth_file_paths(os.environ, auth_file), helper_timeout=args.timeout
    )
    client = RegistryClient(config, credentials)
    metadata = RegistryMetadata(
        client, MetadataLimits(ttl=args.metadata_ttl), args.verify_schema1_signatures
    )
    layers = LayerStore(
        client, args.cache_dir, args.cache_size, soci_v1_referrers=args.soci_v1_referrers
    )
    aliases = frozenset(client.config.aliases)
    status = functools.partial(mount_status, args, mountpoint, client, layers)
    context = TreeContext(metadata, layers, args.platform, time.time_ns(), aliases, status)
    operations = Operations(
        Root(context), metadata_ttl=args.metadata_ttl, request_timeout=args.timeout
    )
    pyfuse3.init(operations, mountpoint, _mount_options(args.allow_other))
    log.info("mounted at %s (regfs %s, platform %s)", mountpoint, __version__, args.platform)
    log.info("credentials from the first of: %s", ", ".join(map(str, credentials.paths)))
    if client.config.registries.sources:
        log.info("registries.conf: %s", ", ".join(client.config.registries.sources))
    ready()
    clean = False
    try:
        trio.run(_main_loop, client, operations, layers)
        clean = True
    finally:
        layers.close()
        pyfuse3.close(unmount=clean)
        log.info("unmounted %s", mountpoint)
    return 0


def mount_status(
    args: argparse.Namespace, mountpoint: str, client: RegistryClient, layers: LayerStore
) -> dict[str, object]:
    """The mount's state as ``regfs status`` shows it (the root's ``user.regfs.status``)."""
    reads = layers.chunk_reads
    return {
        "mountpoint": mountpoint,
        "pid": os.getpid(),
        "version": __version__,
        "options": {
            "platform": str(args.platform), "timeout": args.timeout,
            "metadata_ttl": args.metadata_ttl, "allow_other": args.allow_other,
            "soci_v1_referrers": args.soci_v1_referrers, "kernel_caching": kernel_caching(),
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
        "requests_in_flight": max(IN_FLIGHT[0] - 1, 0),  # less the one asking
    }  # fmt: skip


async def _main_loop(client: RegistryClient, operations: Operations, layers: LayerStore) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_terminate_on_signal)
        nursery.start_soon(operations.invalidator.run)
        nursery.start_soon(layers.run)
        await pyfuse3.main(min_tasks=4, max_tasks=MAX_FUSE_TASKS)
        nursery.cancel_scope.cancel()
    await client.aclose()


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("received %s: unmounting", signal.Signals(signum).name)
            daemon.notify_systemd(b"STOPPING=1")
            pyfuse3.terminate()
            return


def mount(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    if not _prepare_cache_dir(args):
        return 1
    try:
        check_can_mount(mountpoint)
        config = _client_config(args)  # a broken file must stop the mount, here
        args.soci_v1_referrers = _soci_v1_referrers(args)
    except (MountpointError, MalformedContent) as error:
        print(f"regfs: {error}", file=sys.stderr)
        return 1
    if args.foreground:  # e.g. under systemd (Type=notify): ready once the mount is live
        configure_logging(args.log_file, args.debug)
        return serve(args, config, mountpoint, lambda: daemon.notify_systemd(b"READY=1"))
    configure_logging(args.log_file or _default_log_file(), args.debug)
    return daemon.run_in_background(lambda ready: serve(args, config, mountpoint, ready))


def umount(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    dead = is_dead_mount(mountpoint)
    if not dead and mounted_type(mountpoint) is None:
        print(f"regfs: {mountpoint} is not mounted", file=sys.stderr)
        return 1
    command = ["fusermount3", "-u", mountpoint]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 and dead:
        # A daemon killed with -9 can leave a mount that a plain unmount calls busy.
        result = subprocess.run([*command, "-z"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"regfs: {result.stderr.strip() or 'fusermount3 failed'}", file=sys.stderr)
        return 1
    return 0


def _command_setup(
    args: argparse.Namespace, log_level: int
) -> tuple[ClientConfig, DockerCredentials]:
    """Logging to stderr at ``log_level`` (what a command did is printed, not logged), and
    how to reach registries, for the commands that run in the foreground."""
    configure_logging(None, debug=False)
    logging.getLogger().setLevel(log_level)
    credentials = DockerCredentials(
        auth_file_paths(os.environ, args.auth_file), helper_timeout=args.timeout
    )
    return _client_config(args), credentials


def _with_client(
    config: ClientConfig,
    credentials: DockerCredentials,
    work: Callable[[RegistryClient], Awaitable[T]],
) -> T:
    """``work(client)`` in a trio run of its own, the client closed after."""

    async def run() -> T:
        client = RegistryClient(config, credentials)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return trio.run(run)


def index_push(args: argparse.Namespace) -> int:
    """Push a SOCI index for ``args.image``; a line per layer on stdout, errors on stderr."""
    try:
        host, repository, reference = parse_image_reference(args.image)
        config, credentials = _command_setup(args, logging.WARNING)
    except (MalformedContent, ValueError) as error:
        print(f"regfs: {error}", file=sys.stderr)
        return 1

    async def push(client: RegistryClient) -> Pushed:
        return await push_index(
            client, host, repository, reference, platform=args.platform,
            span_size=args.span_size, min_layer_size=args.min_layer_size,
        )  # fmt: skip

    try:
        pushed = _with_client(config, credentials, push)
    except RegfsError as error:
        print(f"regfs: {error}", file=sys.stderr)
        return 1
    for ztoc, layer in pushed.ztocs:
        print(f"{layer.digest}: zTOC {ztoc.digest} ({ztoc.size} bytes)")
    for layer, reason in pushed.skipped:
        print(f"{layer.digest}: no zTOC ({reason})")
    print(f"SOCI v1 index {pushed.index} pushed for {host}/{repository}@{pushed.image}")
    print("mounts and regfs prefetch use it with --soci-v1-referrers (see `regfs mount --help`)")
    return 0


def status(args: argparse.Namespace) -> int:
    """Print what a running mount says of itself (its root's ``user.regfs.status``)."""
    try:
        raw = os.getxattr(args.mountpoint, STATUS_XATTR)
    except OSError as error:
        print(f"regfs: {args.mountpoint}: no regfs mount answers ({error.strerror})",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.json:
        print(raw.decode())
        return 0
    print(format_status(json.loads(raw)), end="")
    return 0


def prefetch(args: argparse.Namespace) -> int:
    """``regfs prefetch``: 0 when every layer asked for is cached and verified."""
    try:
        targets = [target_of(text) for text in args.images]
        config, credentials = _command_setup(args, logging.ERROR)
        soci_v1_referrers = _soci_v1_referrers(args)
    except (MalformedContent, ValueError) as error:
        print(f"regfs: {error}", file=sys.stderr)
        return 1
    if not _prepare_cache_dir(args):
        return 1
    from regfs.commands.progress import progress_front_end  # rich: not for the mount's start-up

    front = progress_front_end(quiet=args.quiet)

    async def fetch(client: RegistryClient) -> list[Outcome]:
        store = LayerStore(
            client, args.cache_dir, args.cache_size, soci_v1_referrers=soci_v1_referrers
        )
        try:
            return await fetch_images(client, store, targets, args.platform, front.reporter)
        finally:
            store.close()

    try:
        with front:
            outcomes = _with_client(config, credentials, fetch)
    except RegfsError as error:
        print(f"regfs: {error}", file=sys.stderr)
        return 1
    for outcome in outcomes:
        if outcome.error:
            print(f"regfs: {outcome.name}: {outcome.error}", file=sys.stderr)
    return 0 if all(outcome.complete for outcome in outcomes) else 1


def cache(args: argparse.Namespace) -> int:
    """``regfs cache stats | prune | verify``."""
    directory: Path = args.cache_dir
    if not directory.is_dir():
        print(f"regfs: {directory}: no cache dir there", file=sys.stderr)
        return 1
    if not _prepare_cache_dir(args):
        return 1
    image: dict[str, int] | None = None
    if getattr(args, "image", None):
        try:
            image = _image_layers(args)
        except (MalformedContent, ValueError, RegfsError) as error:
            print(f"regfs: {error}", file=sys.stderr)
            return 1
    digests = list(image) if image is not None else None
    if args.cache_command == "prune":
        if args.max_size is None and digests is None:
            print("regfs: cache prune needs --max-size or --image", file=sys.stderr)
            return 2
        before = cache_commands.sizes(directory)
        freed = cache_commands.forget(directory, digests) if digests is not None else 0
        if args.max_size is not None:
            cache_commands.prune(directory, args.max_size)
        total_before, total_after = sum(before.values()), cache_total(directory)
        result: dict[str, object] = {"before": total_before, "after": total_after,
                                     "image_bytes_freed": freed}  # fmt: skip
        text = f"{human_size(total_before)} before, {human_size(total_after)} after\n"
        code = 0
    elif args.cache_command == "verify":
        checked, removed = cache_commands.verify(directory)
        disagreeing = cache_commands.toc_disagreements(directory)
        result = {"checked": checked, "removed": removed, "toc_disagreements": disagreeing}
        text = f"{checked} chunks checked, {len(removed)} damaged removed\n"
        text += "".join(f"  removed {name}\n" for name in removed)
        text += "".join(f"  {digest}: its TOC disagrees with its tar, which is shown: "
                        f"{verdict}\n" for digest, verdict in disagreeing.items())  # fmt: skip
        code = 1 if removed or disagreeing else 0
    else:
        result = cache_stats(directory, image)
        text = format_cache_stats(result)
        code = 0
    print(json.dumps(result, indent=1) if args.json else text, end="\n" if args.json else "")
    return code


def cache_total(directory: Path) -> int:
    return sum(cache_commands.sizes(directory).values())


def _image_layers(args: argparse.Namespace) -> dict[str, int]:
    """The layers of ``args.image`` (of ``--platform``), digest to size, asked of its
    registry."""
    host, repository, reference = parse_image_reference(args.image)
    config, credentials = _command_setup(args, logging.ERROR)

    async def layers(client: RegistryClient) -> dict[str, int]:
        image, _ = await resolve_image(client, host, repository, reference, args.platform)
        return {str(layer.digest): layer.size or 0 for layer in image.layers}

    return _with_client(config, credentials, layers)


def cache_stats(directory: Path, image: dict[str, int] | None = None) -> dict[str, object]:
    """What ``regfs cache stats`` shows; with ``image`` (its layers' digests and sizes),
    the share of the image cached as one figure too."""
    cached = cache_commands.layers(directory, list(image) if image is not None else None)
    stats: dict[str, object] = {
        "dir": str(directory),
        "sizes": cache_commands.sizes(directory),
        "layers": [dataclasses.asdict(layer) for layer in cached],
        "mounts": [
            {"mountpoint": state["mountpoint"], "chunk_reads": state["cache"]["chunk_reads"]}  # type: ignore[index]
            for state in cache_commands.mounts_using(directory)
        ],
    }
    if image is not None:
        best = {layer.digest: layer.cached for layer in sorted(cached, key=lambda c: c.cached)}
        total = sum(image.values())
        share = sum(size * best.get(digest, 0.0) for digest, size in image.items())
        stats["image"] = {"layers": len(image), "cached": share / total if total else 1.0}
    return stats


def completion(args: argparse.Namespace) -> int:
    print(bash_completion(build_parser()), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "mount": mount, "umount": umount, "index": index_push, "status": status,
        "cache": cache, "prefetch": prefetch, "completion": completion,
    }  # fmt: skip
    return commands[args.command](args)
