"""Where a registry's API lives: scheme, API host and URL paths.

Registry layer: pure (no IO). Imports regfs.domain only.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import quote

from regfs.domain.reference import api_host, api_repository, is_loopback, split_host_port


def base_url(host_dir: str, insecure_hosts: Collection[str]) -> str:
    """``http://`` for loopback and hosts marked insecure, ``https://`` for the rest."""
    host = api_host(host_dir)
    parts = split_host_port(host)
    bare = parts[0] if parts else host
    plain_http = host in insecure_hosts or host_dir in insecure_hosts or is_loopback(bare)
    return f"{'http' if plain_http else 'https'}://{host}"


def repository_path(host_dir: str, repository: str) -> str:
    """Names are validated before they get here; quoting keeps any slip out of the URL."""
    return f"/v2/{quote(api_repository(host_dir, repository), safe='/')}"


def manifest_path(host_dir: str, repository: str, reference: str) -> str:
    return f"{repository_path(host_dir, repository)}/manifests/{quote(reference, safe=':')}"


def blob_path(host_dir: str, repository: str, digest: str) -> str:
    return f"{repository_path(host_dir, repository)}/blobs/{quote(digest, safe=':')}"


def referrers_path(host_dir: str, repository: str, digest: str) -> str:
    return f"{repository_path(host_dir, repository)}/referrers/{quote(digest, safe=':')}"


def uploads_path(host_dir: str, repository: str) -> str:
    return f"{repository_path(host_dir, repository)}/blobs/uploads/"


def tags_path(host_dir: str, repository: str) -> str:
    return f"{repository_path(host_dir, repository)}/tags/list"


CATALOG_PATH = "/v2/_catalog"
_REPOSITORY_IN_PATH = re.compile(r"^/v2/(.+)/(?:manifests|blobs|tags|referrers)/")
WRITING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def token_scope(method: str, url_path: str) -> str | None:
    """The token scope a request needs: ``repository:NAME:pull`` (``pull,push`` to write)
    or the catalog's."""
    scope = pull_scope(url_path)
    if scope is not None and method in WRITING_METHODS and scope.startswith("repository:"):
        return f"{scope},push"
    return scope


def pull_scope(url_path: str) -> str | None:
    """The token scope a request path needs to read: ``repository:NAME:pull`` or the
    catalog's.

    The API may sit below a path prefix (an alias's ``/some/prefix/v2/…``).
    """
    start = url_path.find("/v2/")
    if start < 0:
        return None
    api_path = url_path[start:]
    if api_path.startswith(CATALOG_PATH):
        return "registry:catalog:*"
    match = _REPOSITORY_IN_PATH.match(api_path)
    return f"repository:{match.group(1)}:pull" if match else None
