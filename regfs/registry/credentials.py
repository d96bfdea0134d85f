"""Where credentials for a registry come from.

Registry layer. Today only anonymous access exists; the docker/podman credential files
(``~/.docker/config.json``, ``auth.json``, helpers) plug in here as another provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    username: str
    password: str


class CredentialProvider(Protocol):
    async def credentials_for(self, host: str) -> BasicCredentials | None:
        """Credentials for ``host`` (the API host, e.g. ``registry-1.docker.io``), or None."""
        ...


class Anonymous:
    """Never has credentials: every token is requested anonymously."""

    async def credentials_for(self, host: str) -> BasicCredentials | None:
        return None
