"""regfs's own configuration file: aliases for registries served below a path prefix, and
whether SOCI v1 referrers may be used.

Registry layer, pure (parsing given text). Some registries live under a subpath of a
portal (``https://portal.example.com/some/prefix/v2/``: distribution's "configurable path
prefix"), which no ``host[:port]`` name can reach. ``~/.config/regfs/config.toml`` (or
``--config``) names them::

    [aliases]
    portal = "https://portal.example.com/some/prefix"

    [soci]
    v1-referrers = true   # as --soci-v1-referrers: see docs/design.md, "Trust model"

and ``MNT/portal/…`` browses that registry. Everything else regfs reads from the files
docker and podman users already have.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from regfs.domain.errors import MalformedContent

_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SOCI_KEYS = frozenset({"v1-referrers"})


@dataclass(frozen=True, slots=True)
class RegfsConfig:
    aliases: dict[str, str] = field(default_factory=dict)
    """Name → base URL (no trailing ``/``)."""
    soci_v1_referrers: bool = False
    """Use SOCI v1 indexes found among an image's referrers (not covered by its digest)."""


def parse_config(text: str, source: str) -> RegfsConfig:
    """The settings of a config file's text; ``MalformedContent`` naming ``source`` for
    anything it cannot use (a typo must not pass for a setting)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise MalformedContent(f"{source}: not valid TOML: {error}") from None
    return RegfsConfig(
        aliases=_aliases(document.get("aliases", {}), source),
        soci_v1_referrers=_soci_v1_referrers(document.get("soci", {}), source),
    )


def _aliases(aliases: Any, source: str) -> dict[str, str]:
    if not isinstance(aliases, dict):
        raise MalformedContent(f"{source}: [aliases] must be a table")
    result = {}
    for name, url in aliases.items():
        if not _ALIAS.fullmatch(name):
            raise MalformedContent(f"{source}: alias {name!r} is not a usable directory name")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise MalformedContent(f"{source}: alias {name!r} needs an http(s) URL")
        if parts.query or parts.fragment:
            raise MalformedContent(f"{source}: alias {name!r}: a base URL has no query")
        result[name] = url.rstrip("/")
    return result


def _soci_v1_referrers(soci: Any, source: str) -> bool:
    if not isinstance(soci, dict):
        raise MalformedContent(f"{source}: [soci] must be a table")
    unknown = sorted(set(soci) - SOCI_KEYS)
    if unknown:
        raise MalformedContent(f"{source}: [soci] has no key {unknown[0]!r} (only v1-referrers)")
    value = soci.get("v1-referrers", False)
    if not isinstance(value, bool):
        raise MalformedContent(f"{source}: [soci] v1-referrers must be true or false")
    return value
