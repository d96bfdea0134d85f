"""Which TLS each registry gets, as docker and podman set it up: the system trust store plus
``certs.d``.

Registry layer, and no httpx: a mount reads these settings before it forks, long before it
connects anywhere (``registry/tls.py`` applies them). containers-certs.d(5): a directory
named ``HOST[:PORT]`` (Docker Hub: ``docker.io``) under ``$HOME/.config/containers/certs.d``,
``/etc/containers/certs.d`` or ``/etc/docker/certs.d`` (the first that exists wins) holds
``*.crt`` files (CAs trusted for that registry, besides the system's) and ``*.cert`` +
``*.key`` pairs (a client certificate). A registry marked insecure gets https without
verification (containers/image's ``InsecureSkipVerify``): its certificate and name are not
checked, and its ``certs.d`` directory, if any, gives only the client certificate.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path

from regfs.domain.reference import DOCKER_HUB, DOCKER_HUB_ALIASES

log = logging.getLogger(__name__)

SYSTEM_CERTS_DIRS = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


def certs_dirs(environment: Mapping[str, str]) -> list[Path]:
    """Where per-registry TLS files are looked for, in order."""
    user = (
        [Path(environment["HOME"]) / ".config/containers/certs.d"] if "HOME" in environment else []
    )
    return [*user, *SYSTEM_CERTS_DIRS]


class TlsSettings:
    """The TLS context for each registry host, made once from its ``certs.d`` directory."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._unverified: dict[str, ssl.SSLContext] = {}
        self._host_dirs: dict[str, Path | None] = {}

    @functools.cached_property
    def default(self) -> ssl.SSLContext:
        """The system trust store, for every host without a directory of its own (made
        when first needed, by the mount's warm-up in a worker thread: it takes ~20 ms)."""
        return ssl.create_default_context()

    def host_dir(self, host: str) -> Path | None:
        """The ``certs.d`` directory configured for ``host`` (``host:port``), if any; looked
        up once per host, as its TLS context is made once (every request's URL asks)."""
        if host not in self._host_dirs:
            self._host_dirs[host] = self._find_host_dir(host)
        return self._host_dirs[host]

    def _find_host_dir(self, host: str) -> Path | None:
        """Docker Hub's directory is ``docker.io`` whichever of its names is asked (the
        API host ``registry-1.docker.io`` included), as containers/image names it."""
        if not host or "/" in host:
            return None
        name = DOCKER_HUB if host in DOCKER_HUB_ALIASES else host
        for root in self.dirs:
            candidate = root / name
            if candidate.is_dir():
                return candidate
        return None

    def context_for(self, host: str) -> ssl.SSLContext:
        if host not in self._contexts:
            directory = self.host_dir(host)
            self._contexts[host] = self.default if directory is None else _context(directory)
        return self._contexts[host]

    def unverified_context_for(self, host: str) -> ssl.SSLContext:
        """For a registry marked insecure: no certificate nor host name check; the client
        certificate of its ``certs.d`` directory, if it has one (no trust store to load)."""
        if host not in self._unverified:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            directory = self.host_dir(host)
            if directory is not None:
                _load_client_certificates(context, directory)
            self._unverified[host] = context
        return self._unverified[host]


def _context(directory: Path) -> ssl.SSLContext:
    """The system trust store plus the directory's CAs and client certificate."""
    context = ssl.create_default_context()
    for ca in sorted(directory.glob("*.crt")):
        context.load_verify_locations(cafile=ca)
    _load_client_certificates(context, directory)
    log.info("TLS for %s: CAs and client certificates from %s", directory.name, directory)
    return context


def _load_client_certificates(context: ssl.SSLContext, directory: Path) -> None:
    """Each ``*.cert`` with the ``*.key`` beside it."""
    for certificate in sorted(directory.glob("*.cert")):
        key = certificate.with_suffix(".key")
        if not key.exists():
            log.warning("%s: no %s beside it: client certificate not used", certificate, key.name)
            continue
        context.load_cert_chain(certificate, key)
