"""What the commands share: logging, regfs's settings file, how to reach registries, the
cache dir.

Application layer.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import trio

from regfs.cache.directory import UnsafeCacheDir, prepare_cache_dir
from regfs.domain.errors import MalformedContent
from regfs.registry.aliases import RegfsConfig, parse_config
from regfs.registry.config import ClientConfig
from regfs.registry.credentials import DockerCredentials, auth_file_paths
from regfs.registry.settings import load_registries_conf
from regfs.registry.tls_settings import TlsSettings, certs_dirs

if TYPE_CHECKING:
    from regfs.registry.client import RegistryClient

T = TypeVar("T")


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


def cache_dir_ready(args: argparse.Namespace, *, writing: bool = True) -> bool:
    """Make or check ``args.cache_dir`` (``regfs.cache.directory``); False, with the reason
    on stderr, if it must not be used. ``writing=False``: only read (``regfs cache
    stats``), so a read-only cache dir serves."""
    try:
        prepare_cache_dir(args.cache_dir, allow_shared=args.allow_shared_cache,
                          writing=writing)  # fmt: skip
    except (UnsafeCacheDir, OSError) as error:
        print(f"regfs: {error}", file=sys.stderr)
        return False
    return True


def configure_logging(log_file: Path | None, *, debug: bool) -> None:
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


def client_config(args: argparse.Namespace) -> ClientConfig:
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


def soci_v1_referrers(args: argparse.Namespace) -> bool:
    """``--soci-v1-referrers`` or ``--no-soci-v1-referrers``, else the config file's
    ``[soci] v1-referrers``; ``MalformedContent`` for a file that does not parse."""
    if args.soci_v1_referrers is not None:
        return bool(args.soci_v1_referrers)
    return load_config(args).soci_v1_referrers


def command_setup(
    args: argparse.Namespace, log_level: int
) -> tuple[ClientConfig, DockerCredentials]:
    """Logging to stderr at ``log_level`` (what a command did is printed, not logged), and
    how to reach registries, for the commands that run in the foreground."""
    configure_logging(None, debug=False)
    logging.getLogger().setLevel(log_level)
    credentials = DockerCredentials(
        auth_file_paths(os.environ, args.auth_file), helper_timeout=args.timeout
    )
    return client_config(args), credentials


GC_THRESHOLDS = (10_000, 20, 20)
"""Allocations between collections of the youngest generation, and collections of each
generation between collections of the next (Python's default: 700, 10, 10). Indexing a
layer makes a few objects per file, each kept: at the default, a Debian layer's zTOC
(8 743 files) took 0.13-0.17 s to index instead of 0.09 s, its time spent walking those
objects again and again."""


def tune_garbage_collection() -> None:
    """Collect less often, and never walk what exists now (modules, classes, the config):
    for a process about to index layers, once what it needs to start is made."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def with_client(
    config: ClientConfig,
    credentials: DockerCredentials,
    work: Callable[[RegistryClient], Awaitable[T]],
) -> T:
    """``work(client)`` in a trio run of its own, the client closed after."""

    async def run() -> T:
        # httpx: this module is imported by the mount, which needs no client to answer
        from regfs.registry.client import RegistryClient

        client = RegistryClient(config, credentials)
        tune_garbage_collection()
        try:
            return await work(client)
        finally:
            await client.aclose()

    return trio.run(run)
