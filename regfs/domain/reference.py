"""Names of registry hosts, repositories and tags, and Docker Hub's aliases.

Domain layer: pure, stdlib only. The grammar follows the distribution spec
(``[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*`` per path component, tags ``[\\w][\\w.-]{0,127}``).
"""

from __future__ import annotations

import ipaddress
import re

from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent

DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_API_HOST = "registry-1.docker.io"
DOCKER_HUB = "docker.io"
"""Docker Hub's name in containers/image: what registries.conf and certs.d call it."""

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOSTNAME = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_PORT = re.compile(r"[0-9]{1,5}")
# All used with fullmatch: ``$`` would also match before a trailing newline.
MAX_REPOSITORY_LENGTH = 255


def is_repository_component(name: str) -> bool:
    """True for one ``/``-separated part of a repository name, e.g. ``library`` or ``my-app``."""
    return bool(_COMPONENT.fullmatch(name))


def is_repository(name: str) -> bool:
    return len(name) <= MAX_REPOSITORY_LENGTH and all(
        is_repository_component(part) for part in name.split("/")
    )


def is_tag(name: str) -> bool:
    return bool(_TAG.fullmatch(name))


def split_host_port(name: str) -> tuple[str, int | None] | None:
    """Split ``host``, ``host:port`` or ``[v6]:port``; None when it is not a host name at all."""
    if name.startswith("["):
        address, _, rest = name[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            return None
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return None
        host = address
    else:
        host, colon, port_text_or_empty = name.partition(":")
        port_text = port_text_or_empty if colon else None
        if not _HOSTNAME.fullmatch(host):
            return None
    if port_text is None:
        return host, None
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        return None
    return host, int(port_text)


def is_registry_host(name: str) -> bool:
    """True for names docker would take as a registry: a dot, a port, or ``localhost``.

    Requiring that keeps stray lookups (``.git``, ``autorun.inf``, shell completion of a
    typo) from being sent to DNS and the network.
    """
    parts = split_host_port(name)
    if parts is None:
        return False
    host, port = parts
    return port is not None or host == "localhost" or "." in host or ":" in host


def is_loopback(host: str) -> bool:
    """Loopback hosts are spoken to over plain http, as docker does."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_host(host_dir: str) -> str:
    """The host[:port] the HTTP API lives on: Docker Hub's aliases map to its API host."""
    return DOCKER_HUB_API_HOST if host_dir in DOCKER_HUB_ALIASES else host_dir


def api_repository(host_dir: str, repository: str) -> str:
    """Docker Hub's one-component names (``debian``) live under ``library/``."""
    if host_dir in DOCKER_HUB_ALIASES and "/" not in repository:
        return f"library/{repository}"
    return repository


def parse_image_reference(text: str) -> tuple[str, str, str]:
    """``HOST[:PORT]/REPOSITORY[:TAG]`` or ``…@DIGEST`` as (host, repository, tag or digest);
    the tag is ``latest`` when left out, as docker and skopeo take it. ValueError if not."""
    host, _, rest = text.partition("/")
    repository, at, reference = rest.partition("@")
    if not at:
        repository, colon, reference = rest.rpartition(":")
        if not colon or "/" in reference:
            repository, reference = rest, "latest"
    valid_reference = is_tag(reference) or (at and _is_digest(reference))
    if not (is_registry_host(host) and is_repository(repository) and valid_reference):
        raise ValueError(f"{text!r} is not HOST[:PORT]/REPOSITORY:TAG or …@DIGEST")
    return host, repository, reference


def image_reference(host: str, repository: str, reference: str) -> str:
    """``HOST/REPOSITORY:TAG`` or ``…@DIGEST``: what ``parse_image_reference`` reads."""
    return f"{host}/{repository}{'@' if ':' in reference else ':'}{reference}"


def parse_pulled_reference(text: str) -> tuple[str, str, str]:
    """The reference podman pulls (``HOST/REPOSITORY:TAG``, ``…@DIGEST`` or both, as
    containers/image writes a reference with both) as (host, repository, tag or digest):
    the digest wins over the tag, as podman pulls it. ValueError if not a reference."""
    named, at, digest = text.partition("@")
    if at and ":" in named.partition("/")[2]:
        named = named.rpartition(":")[0]  # the tag beside a digest says nothing more
    return parse_image_reference(f"{named}@{digest}" if at else named)


def _is_digest(text: str) -> bool:
    try:
        Digest.parse(text)
    except MalformedContent:
        return False
    return True
