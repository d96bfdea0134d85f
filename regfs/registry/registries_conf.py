"""containers-registries.conf(5), version 2: where a reference is pulled from.

Registry layer, pure (no IO but parsing given text). For ``HOST/REPOSITORY`` the
``[[registry]]`` table with the longest matching ``prefix`` decides: it may rewrite the
prefix to its ``location``, mark it ``insecure`` (plain http allowed) or ``blocked``, and
list ``[[registry.mirror]]`` tables to try first, each honouring its ``pull-from-mirror``
(``all``, ``digest-only``, ``tag-only``; ``mirror-by-digest-only`` makes them all
``digest-only``). A reference no table matches is pulled from its own host.
``unqualified-search-registries`` and aliases are not used: regfs paths always name their
registry.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from typing import Any

from regfs.domain.errors import MalformedContent
from regfs.domain.reference import DOCKER_HUB, DOCKER_HUB_ALIASES, api_repository
from regfs.registry.retry_policy import HANDOVER_ATTEMPTS, MAX_ATTEMPTS

PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One place to pull ``repository`` from: a registry's own location, or a mirror."""

    host: str
    """``host[:port]`` as written (``docker.io`` still means Docker Hub)."""
    repository: str
    insecure: bool = False
    mirror: bool = False

    @property
    def attempts(self) -> int:
        """How often a request is sent here: once at a mirror, which has a next place."""
        return HANDOVER_ATTEMPTS if self.mirror else MAX_ATTEMPTS


@dataclass(frozen=True, slots=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"


@dataclass(frozen=True, slots=True)
class RegistryTable:
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()
    source: str = field(default="", compare=False)
    """The file this table came from: a refusal it makes names it."""


@dataclass(frozen=True, slots=True)
class RegistriesConf:
    registries: tuple[RegistryTable, ...] = ()
    sources: tuple[str, ...] = field(default=(), compare=False)
    """The files these tables came from, for log lines."""

    def table_for(self, reference: str) -> RegistryTable | None:
        """The table with the longest prefix matching ``reference`` (``host/repo``)."""
        matches = [t for t in self.registries if _prefix_matches(t.prefix, reference)]
        return max(matches, key=lambda t: len(t.prefix.lstrip("*"))) if matches else None

    def endpoints(self, host: str, repository: str, *, by_digest: bool) -> list[Endpoint]:
        """Where to pull ``host/repository`` from, in order: usable mirrors, then the
        (possibly rewritten) location. A blocked reference has no endpoint at all."""
        name = _normalised(host, repository)
        table = self.table_for(_reference(*name))
        if table is None:
            return [Endpoint(host, repository)]
        if table.blocked:
            return []
        wanted = "digest-only" if by_digest else "tag-only"
        mirrors = [m for m in table.mirrors if m.pull_from_mirror in ("all", wanted)]
        return [
            *(_rewrite(table, mirror.location, *name, mirror) for mirror in mirrors),
            _rewrite(table, table.location, *name, None),
        ]

    def table_source(self, host: str, repository: str) -> str:
        """The file whose table decides for ``host/repository`` (the one that blocks it),
        or every file read where the table does not say."""
        table = self.table_for(_reference(*_normalised(host, repository)))
        return table.source if table is not None and table.source else ", ".join(self.sources)

    def insecure(self, host: str) -> bool:
        """Whether the table matching ``host`` itself says ``insecure``: a wildcard table
        (``*.lan``) names no host :meth:`insecure_hosts` could list, and containers/image
        asks the table matching each host it connects to."""
        table = self.table_for(_reference(*_normalised(host, "")))
        return table is not None and table.insecure

    def insecure_hosts(self) -> frozenset[str]:
        """Every location and mirror marked ``insecure``: plain http is allowed to them."""
        hosts = set()
        for table in self.registries:
            if table.insecure:
                hosts.add(_host_of(table.location))
            hosts |= {_host_of(m.location) for m in table.mirrors if m.insecure}
        return frozenset(hosts)


def _normalised(host: str, repository: str) -> tuple[str, str]:
    """Docker Hub's names as containers/image writes them before matching any prefix
    (``docker.io``, ``library/`` before a one-component name): ``prefix = "docker.io"``
    rewritten elsewhere, or ``docker.io/library`` blocked, must see every spelling a path
    may use for the same image."""
    if host not in DOCKER_HUB_ALIASES:
        return host, repository
    return DOCKER_HUB, api_repository(host, repository) if repository else ""


def _reference(host: str, repository: str) -> str:
    return f"{host}/{repository}" if repository else host


def _host_of(location: str) -> str:
    return location.split("/", 1)[0]


def _prefix_matches(prefix: str, reference: str) -> bool:
    """``prefix`` matches at a path-component boundary; ``*.example.com`` any subdomain,
    whatever its port (``reg.example.com:5000``), as in containers/image."""
    if prefix.startswith("*."):
        host = reference.split("/", 1)[0].partition(":")[0]
        return host.endswith(prefix[1:])
    return reference == prefix or reference.startswith(prefix + "/")


def _rewrite(
    table: RegistryTable, location: str, host: str, repository: str, mirror: Mirror | None
) -> Endpoint:
    """``prefix`` → ``location`` for ``host/repository`` (a wildcard prefix keeps the host)."""
    reference = _reference(host, repository)
    if table.prefix.startswith("*."):
        rewritten = reference if mirror is None else f"{location}/{repository}"
    else:
        rewritten = location + reference[len(table.prefix) :]
    new_host, _, new_repository = rewritten.partition("/")
    insecure = mirror.insecure if mirror else table.insecure
    return Endpoint(new_host, new_repository, insecure, mirror is not None)


def _bool(table: dict[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise MalformedContent(f"{where}: {key} must be true or false")
    return value


def _string(table: dict[str, Any], key: str, where: str, default: str = "") -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise MalformedContent(f"{where}: {key} must be a string")
    return value.rstrip("/")


def _mirror(table: Any, where: str) -> Mirror:
    if not isinstance(table, dict):
        raise MalformedContent(f"{where}: a mirror must be a table")
    location = _string(table, "location", where)
    pull_from = _string(table, "pull-from-mirror", where, "all")
    if not location or pull_from not in PULL_FROM_MIRROR:
        raise MalformedContent(f"{where}: a mirror needs a location and a known pull-from-mirror")
    return Mirror(location, _bool(table, "insecure", where), pull_from)


def _mirrors(table: dict[str, Any], where: str) -> tuple[Mirror, ...]:
    """The table's mirrors; with ``mirror-by-digest-only`` each is ``digest-only``, and a
    mirror saying its own ``pull-from-mirror`` then is refused, as containers/image does
    (which of the two would hold is not for regfs to guess)."""
    mirrors = table.get("mirror", [])
    if not isinstance(mirrors, list):
        raise MalformedContent(f"{where}: mirror must be an array of tables")
    if not _bool(table, "mirror-by-digest-only", where):
        return tuple(_mirror(mirror, where) for mirror in mirrors)
    if any(isinstance(m, dict) and "pull-from-mirror" in m for m in mirrors):
        raise MalformedContent(
            f"{where}: mirror-by-digest-only and a mirror's pull-from-mirror cannot both be set"
        )
    return tuple(replace(_mirror(m, where), pull_from_mirror="digest-only") for m in mirrors)


def _registry(table: Any, where: str) -> RegistryTable:
    if not isinstance(table, dict):
        raise MalformedContent(f"{where}: [[registry]] must be a table")
    location = _string(table, "location", where)
    prefix = _string(table, "prefix", where) or location
    if not prefix or (not location and not prefix.startswith("*.")):
        raise MalformedContent(f"{where}: [[registry]] needs a location or a prefix")
    return RegistryTable(
        prefix,
        location or prefix,
        _bool(table, "insecure", where),
        _bool(table, "blocked", where),
        _mirrors(table, where),
        where,
    )


def parse_registries_conf(text: str, source: str) -> list[RegistryTable]:
    """The ``[[registry]]`` tables of one file; ``MalformedContent`` naming ``source``."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise MalformedContent(f"{source}: not valid TOML: {error}") from None
    tables = document.get("registry", [])
    if not isinstance(tables, list):
        raise MalformedContent(f"{source}: registry must be an array of tables")
    return [_registry(table, source) for table in tables]


def merge(files: list[tuple[str, list[RegistryTable]]]) -> RegistriesConf:
    """Files in reading order: a later file's table replaces an earlier file's with the same
    prefix (as drop-ins in ``registries.conf.d`` override the main file); within one file
    the first table of a prefix is the one, as containers/image ignores the others."""
    by_prefix: dict[str, RegistryTable] = {}
    for _, tables in files:
        firsts: dict[str, RegistryTable] = {}
        for table in tables:
            firsts.setdefault(table.prefix, table)
        by_prefix.update(firsts)
    return RegistriesConf(tuple(by_prefix.values()), tuple(source for source, _ in files))
