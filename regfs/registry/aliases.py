"""regfs's own configuration file: aliases for registries served below a path prefix.

Registry layer, pure (parsing given text). Some registries live under a subpath of a
portal (``https://portal.example.com/some/prefix/v2/``: distribution's "configurable path
prefix"), which no ``host[:port]`` name can reach. ``~/.config/regfs/config.toml`` (or
``--config``) names them::

    [aliases]
    portal = "https://portal.example.com/some/prefix"

and ``MNT/portal/…`` browses that registry. Everything else regfs reads from the files
docker and podman users already have.
"""

from __future__ import annotations

import re
import tomllib
from urllib.parse import urlsplit

from regfs.domain.errors import MalformedContent

_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def parse_config(text: str, source: str) -> dict[str, str]:
    """The aliases (name → base URL, no trailing ``/``) of a config file's text."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise MalformedContent(f"{source}: not valid TOML: {error}") from None
    aliases = document.get("aliases", {})
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
