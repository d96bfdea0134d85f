"""Reading the containers configuration files regfs honours, from where podman reads them.

Registry layer (file IO only). registries.conf, as containers-registries.conf(5) and
containers/image find it: ``$CONTAINERS_REGISTRIES_CONF`` if set, else
``~/.config/containers/registries.conf`` if it exists (and then only user drop-ins), else
``/etc/containers/registries.conf``; then the ``*.conf`` drop-ins of
``/etc/containers/registries.conf.d`` and ``~/.config/containers/registries.conf.d``, each
in name order, later files overriding earlier ones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from regfs.registry.registries_conf import RegistriesConf, merge, parse_registries_conf

log = logging.getLogger(__name__)

SYSTEM_REGISTRIES_CONF = Path("/etc/containers/registries.conf")
SYSTEM_REGISTRIES_DIR = Path("/etc/containers/registries.conf.d")


def registries_conf_files(environment: Mapping[str, str]) -> list[Path]:
    """The files to read, in order (missing ones included: they are skipped)."""
    home = Path(environment.get("HOME") or "/nonexistent")
    user_file = home / ".config/containers/registries.conf"
    user_dir = home / ".config/containers/registries.conf.d"
    if environment.get("CONTAINERS_REGISTRIES_CONF"):
        main, dirs = (
            Path(environment["CONTAINERS_REGISTRIES_CONF"]),
            [SYSTEM_REGISTRIES_DIR, user_dir],
        )
    elif user_file.exists():
        main, dirs = user_file, [user_dir]
    else:
        main, dirs = SYSTEM_REGISTRIES_CONF, [SYSTEM_REGISTRIES_DIR, user_dir]
    drop_ins = [path for d in dirs if d.is_dir() for path in sorted(d.glob("*.conf"))]
    return [main, *drop_ins]


def load_registries_conf(environment: Mapping[str, str]) -> RegistriesConf:
    """Every ``[[registry]]`` table; ``MalformedContent`` for a file that does not parse
    (regfs then refuses to mount rather than pull from the wrong place)."""
    files = []
    for path in registries_conf_files(environment):
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        files.append((str(path), parse_registries_conf(text, str(path))))
    return merge(files)
