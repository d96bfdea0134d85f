"""What a registry client is told at start: timeouts, hosts, registries.conf, TLS, aliases.

Registry layer, pure data: the commands build it from options and the standard files;
the client and its places read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from regfs.registry.registries_conf import RegistriesConf
from regfs.registry.tls_settings import TlsSettings


@dataclass(frozen=True, slots=True)
class ClientConfig:
    timeout: float = 30.0
    """Seconds one attempt at one place (with its retries) may take before it fails."""
    insecure_hosts: frozenset[str] = frozenset()
    """Hosts spoken to over plain http (loopback always is; registries.conf adds more)."""
    redirect_hosts: frozenset[str] = frozenset()
    """Hosts a registry may send regfs to whatever their address (``--allow-redirect-to``;
    insecure hosts are too): redirects, foreign layers' URLs, token realms."""
    registries: RegistriesConf = field(default_factory=RegistriesConf)
    tls: TlsSettings = field(default_factory=lambda: TlsSettings([]))
    aliases: dict[str, str] = field(default_factory=dict)
    """Names that stand for a base URL with a path prefix (``registry/aliases.py``)."""
    user_agent: str = "regfs"
