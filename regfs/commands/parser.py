"""The argument parser of ``regfs``: every command, its options and their help.

Application layer. ``--help``, the man page and the bash completion
(``commands/docs.py``) are all made from this one parser.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from regfs import __version__
from regfs.commands.option_values import (
    CACHE_DIR_DEFAULT,
    absolute_path,
    default_cache_dir,
    parse_bytes,
    parse_size,
    platform,
    positive,
    span_size,
)
from regfs.domain.platform import host_platform


def _add_registry_options(command: argparse.ArgumentParser) -> None:
    """Options of every command that talks to registries."""
    command.add_argument(
        "--platform",
        type=platform,
        default=host_platform(),
        help="os/arch[/variant] an index dir shows by default (default: this machine's)",
    )
    command.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST",
        help="https to HOST[:PORT] without verifying its certificate, or plain http if it "
        "does not speak TLS, as podman's insecure registries (loopback not given here "
        "gets plain http); repeatable",
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
        type=absolute_path,
        metavar="PATH",
        help="credentials (docker config.json or podman auth.json form) to use instead of "
        "the usual search: REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json "
        "(without XDG_RUNTIME_DIR: /run/containers/UID/auth.json), "
        "~/.config/containers/auth.json, ~/.docker/config.json",
    )
    command.add_argument(
        "--config",
        type=absolute_path,
        metavar="PATH",
        help="regfs's own settings: aliases for registries below a path prefix, SOCI v1 "
        "referrers (default: $XDG_CONFIG_HOME/regfs/config.toml, or "
        "~/.config/regfs/config.toml)",
    )
    command.add_argument(
        "--timeout",
        type=positive,
        default=30.0,
        metavar="SECONDS",
        help="deadline, retries and mirrors included: in a mount, for each request the "
        "kernel sends (shared by every registry call it makes); in other commands, for "
        "each registry call (default: 30)",
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
        type=absolute_path,
        default=default_cache_dir(),
        help=f"layer indexes and chunks, kept across mounts (default: {CACHE_DIR_DEFAULT})",
    )
    _add_cache_size_option(
        command,
        "bound on the cache dir (chunks, layer indexes, blobs being indexed); least "
        "recently used go first, except what is pinned",
    )
    _add_shared_cache_option(command)


def _add_cache_size_option(command: argparse.ArgumentParser, text: str) -> None:
    command.add_argument(
        "--cache-size",
        type=parse_size,
        default=10 << 30,
        metavar="SIZE",
        help=f"{text} (default: 10G)",
    )


def _add_shared_cache_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--allow-shared-cache",
        action="store_true",
        help="use a cache dir that other users can write (they can change what mounts on "
        "it show); without it such a dir is refused, and a new one is made private",
    )


def _add_mount_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mount = commands.add_parser("mount", help="mount registries at MOUNTPOINT")
    mount.add_argument("mountpoint", help="an empty directory")
    _add_registry_options(mount)
    mount.add_argument(
        "--metadata-ttl",
        type=positive,
        default=60.0,
        metavar="SECONDS",
        help="how long catalogs, tag lists and tag targets are trusted (default: 60)",
    )
    mount.add_argument(
        "--no-stale",
        dest="stale",
        action="store_false",
        help="while a registry cannot be reached, fail (EIO) instead of showing the last "
        "catalog, tag list and tag targets it gave (marked user.regfs.stale); what a digest "
        "names is shown from the cache either way",
    )
    mount.add_argument(
        "--max-stale",
        type=positive,
        default=math.inf,
        metavar="SECONDS",
        help="show a registry's last answer while it cannot be reached only if it is at "
        "most this old (default: however old)",
    )
    _add_cache_options(mount)
    _add_soci_option(mount)
    mount.add_argument(
        "--verify-schema1-signatures",
        action="store_true",
        help="check the JWS signatures of schema1 manifests against their keys (jwk, x5c); "
        "digests are always verified",
    )
    mount.add_argument(
        "--background-fetch",
        action="store_true",
        help="once a file of a layer read lazily (eStargz, zstd:chunked, SOCI) is read, fetch "
        "the rest of that layer in the background, behind what readers wait for: later reads "
        "cost no round trip, at the price of the whole layer's bytes (without it, a layer's rest "
        "is fetched so once 512 different files of it were read)",
    )
    mount.add_argument(
        "--record-reads",
        type=absolute_path,
        metavar="FILE",
        help="append to FILE the path of each file of an image read through the mount, the "
        "first time it is read: mount, run a container's start once, then give FILE to "
        "`regfs index push-start` (a mount used for nothing else records that start alone)",
    )
    mount.add_argument(
        "--layer-store",
        action="store_true",
        help="serve a containers/storage Additional Layer Store for podman and CRI-O "
        '(storage.conf: additionallayerstores = ["MOUNTPOINT:ref"]) instead of the '
        "registries' tree, from the same cache",
    )
    mount.add_argument("--allow-other", action="store_true", help="let other users see the mount")
    mount.add_argument(
        "-f", "--foreground", action="store_true", help="stay in the foreground, log to stderr"
    )
    mount.add_argument(
        "--log-file",
        type=absolute_path,
        help="where the daemon logs "
        "(default: $XDG_STATE_HOME/regfs/regfs.log, or ~/.local/state/regfs/regfs.log)",
    )
    mount.add_argument("--debug", action="store_true", help="log every request")


def _add_install_pyfuse3_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    fast = commands.add_parser(
        "install-pyfuse3",
        help="build pyfuse3 with regfs's patches into regfs's environment",
        description="Download pyfuse3's source with pip, apply regfs's patches (shipped "
        "with regfs), build a wheel and install it into the Python environment regfs runs "
        "in (its venv, whether pip or pipx made it). With it the kernel keeps file pages, "
        "listings and symlink targets, and stops sending opens: warm walks and reads at "
        "local-disk speed; and a mount answers about 20 ms sooner. Needs a C compiler, "
        "pkg-config, patch and the libfuse3 and Python headers (Debian: libfuse3-dev "
        "pkg-config gcc python3-dev patch).",
    )
    fast.add_argument(
        "--wheel-dir",
        type=Path,
        metavar="DIR",
        help="where the wheel is kept and looked for first "
        "(default: $XDG_CACHE_HOME/regfs/pyfuse3, or ~/.cache/regfs/pyfuse3)",
    )
    fast.add_argument(
        "--build-only", action="store_true", help="print the wheel's path; install nothing"
    )


def _add_cache_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``regfs cache stats | prune | verify | pin | unpin``."""
    cache = commands.add_parser("cache", help="the cache dir: sizes, pruning, checking, pins")
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
            "re-hash every stored chunk and check every layer index's seal, deleting "
            "damaged ones, and compare the TOC of each lazy layer with its tar where both "
            "are cached (exit 1 if any is wrong)",
        ),
        (
            "pin",
            "keep what the cache holds of IMAGE (manifests, config, SOCI index, every "
            "layer's indexes and pieces) out of eviction, in every process using the cache "
            "dir; asks no registry: a tag names the image it last named to a mount or "
            "prefetch, and what is not cached is listed (exit 1; regfs prefetch --pin "
            "fetches it). All pins together may hold at most four fifths of --cache-size",
        ),
        ("unpin", "let what IMAGE's pin held be evicted again (IMAGE as it was pinned)"),
    ):
        command = cache_commands.add_parser(name, help=text, description=text)
        command.add_argument(
            "--cache-dir",
            type=absolute_path,
            default=default_cache_dir(),
            help=f"the cache dir of the mounts (default: {CACHE_DIR_DEFAULT})",
        )
        _add_shared_cache_option(command)
        command.add_argument("--json", action="store_true", help="print JSON, for scripts")
        if name == "prune":
            command.add_argument("--max-size", type=parse_bytes, metavar="SIZE",
                                 help="evict the least recently used down to SIZE")  # fmt: skip
        if name in ("pin", "unpin"):
            command.add_argument(
                "reference", metavar="IMAGE", help="HOST[:PORT]/REPOSITORY:TAG or …@DIGEST"
            )
        if name == "pin":
            command.add_argument("--platform", type=platform, default=host_platform(),
                                 help="os/arch[/variant] whose image of an index is pinned "
                                 "(default: this machine's)")  # fmt: skip
            _add_cache_size_option(
                command,
                "what mounts on the cache dir are given: all pins may hold four fifths of it",
            )
        if name in ("stats", "prune"):
            command.add_argument(
                "--image",
                metavar="IMAGE",
                help="HOST/REPOSITORY:TAG or @DIGEST: only that image's layers (the registry "
                "says which they are)",
            )
            _add_registry_options(command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regfs", description="Browse container registries as a read-only filesystem."
    )
    parser.add_argument("--version", action="version", version=f"regfs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    _add_mount_command(commands)
    umount = commands.add_parser("umount", help="unmount MOUNTPOINT (also a dead mount)")
    umount.add_argument("mountpoint")

    _add_install_pyfuse3_command(commands)

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
    warm.add_argument(
        "--pin",
        action="store_true",
        help="pin each IMAGE too (regfs cache pin): pinned before its layers are fetched, "
        "so nothing of it is evicted meanwhile; fails before fetching, and pins nothing, "
        "when it cannot fit in four fifths of --cache-size beside the other pins",
    )

    completion = commands.add_parser(
        "completion",
        help="print the shell completion for regfs",
        description="Print the completion script: source <(regfs completion bash)",
    )
    completion.add_argument("shell", choices=["bash"])

    state = commands.add_parser("status", help="what a running mount at MOUNTPOINT is doing")
    state.add_argument("mountpoint")
    state.add_argument("--json", action="store_true", help="the whole state, as JSON")

    _add_cache_commands(commands)

    index = commands.add_parser(
        "index", help="SOCI indexes and start records: what mounts read images by"
    )
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
        type=span_size,
        default="2M",  # layers/ztoc_builder.py's DEFAULT_SPAN_SIZE, without importing it
        metavar="SIZE",
        help="uncompressed bytes between checkpoints: what one read fetches at least "
        "(default: 2M; soci's is 4M). Smaller spans fetch fewer bytes for a start that "
        "reads many files, but each adds a 32 KiB window to the zTOC, which a mount "
        "fetches whole before its first read (docs/benchmarks.md: 2M rather than 4M cut a "
        "python start's bytes by a sixth and its time by a fifth on a 30 ms link)",
    )
    push.add_argument(
        "--min-layer-size",
        type=parse_bytes,
        default=10 << 20,
        metavar="SIZE",
        help="smaller layers get no zTOC: reading them whole costs little (default: 10M, as soci)",
    )
    start = index_commands.add_parser(
        "push-start",
        help="push what a start of IMAGE reads as its referrer (a start record)",
        description="Push the files RECORD names as a start record of IMAGE (of --platform, "
        "for an index): a referrer that every mount looks for when the image is first "
        "read, and then fetches those files at once, instead of one round trip per file "
        "as the start reads them. RECORD is ctr-remote's --record-out form (a JSON object "
        'with a "path" per line) or one path per line, relative to the image\'s root; '
        '"-" reads it from standard input. No digest of the image covers a record, but '
        "it only says what to fetch early: every byte served is still checked.",
    )
    start.add_argument("image", help="HOST[:PORT]/REPOSITORY:TAG or HOST[:PORT]/REPOSITORY@DIGEST")
    start.add_argument("record", help="the file naming the paths a start reads, in order")
    _add_registry_options(start)
    return parser
