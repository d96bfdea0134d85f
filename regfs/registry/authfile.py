"""docker's ``config.json`` and podman's ``auth.json``: what they say about one registry.

Registry layer, pure (no IO but a log line for a skipped entry). Both files share one
shape (containers-auth.json(5), docker's config file): ``auths`` maps a registry (or, for
podman, a ``registry/namespace`` prefix) to ``auth`` (base64 ``user:password``) or
``username``/``password``, and optionally an ``identitytoken`` (an OAuth2 refresh token);
``credHelpers`` names a helper per registry; ``credsStore`` a helper for every registry.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, field
from typing import Any

from regfs.domain.errors import MalformedContent
from regfs.domain.manifest import load_json_object
from regfs.domain.reference import DOCKER_HUB_ALIASES

log = logging.getLogger(__name__)

DOCKER_HUB_KEY = "docker.io"
DOCKER_HUB_SERVER_URL = "https://index.docker.io/v1/"
"""What docker stores Docker Hub's credentials under, and asks helpers for first."""


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str
    identity_token: str | None = None
    """An OAuth2 refresh token (``docker login`` with some registries): exchanged for
    access tokens with a POST instead of sending the password."""
    source: str = ""
    """Where they came from (a file path or ``docker-credential-NAME``), for log lines."""

    def __repr__(self) -> str:  # never let a password reach a log line by accident
        return f"Credentials(username={self.username!r}, source={self.source!r})"


@dataclass(frozen=True, slots=True)
class AuthFile:
    path: str
    auths: dict[str, Credentials] = field(default_factory=dict)
    """By normalised key (``registry`` or ``registry/namespace…``)."""
    helpers: dict[str, str] = field(default_factory=dict)
    """``credHelpers``: normalised registry → helper name (``docker-credential-NAME``)."""
    store: str | None = None
    """``credsStore``: the helper for registries with no entry of their own."""


def registry_key(host: str) -> str:
    """The key a registry's credentials are stored under: Docker Hub's names are one."""
    return DOCKER_HUB_KEY if host in DOCKER_HUB_ALIASES else host


def normalize_key(key: str) -> str:
    """``https://index.docker.io/v1/`` → ``docker.io``; ``http://host:5000`` → ``host:5000``.

    A key with a scheme is docker's legacy form, whose path (``/v1/``) is not a namespace;
    a key without one may name a namespace (podman's ``quay.io/team``).
    """
    if "://" in key:
        key = key.split("://", 1)[1].split("/", 1)[0]
    key = key.rstrip("/")
    host, slash, rest = key.partition("/")
    return registry_key(host) + slash + rest


def lookup_keys(host: str, repository: str) -> list[str]:
    """Keys that may hold credentials for ``host/repository``, most specific first."""
    registry = registry_key(host)
    parts = repository.split("/") if repository else []
    namespaced = [f"{registry}/{'/'.join(parts[:n])}" for n in range(len(parts), 0, -1)]
    return [*namespaced, registry]


def helper_server_urls(host: str) -> tuple[str, ...]:
    """What a credential helper is asked for, in turn until one has an answer: Docker Hub
    under docker's name (``docker login``), then podman's (``podman login`` stores it as
    ``docker.io``)."""
    if registry_key(host) == DOCKER_HUB_KEY:
        return DOCKER_HUB_SERVER_URL, DOCKER_HUB_KEY
    return (host,)


def _credentials(entry: Any, path: str, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        raise MalformedContent(f"{path}: auths[{key!r}] is not an object")
    username, password = entry.get("username"), entry.get("password")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise MalformedContent(f"{path}: auths[{key!r}].auth is not base64") from None
        username, colon, password = decoded.partition(":")
        if not colon:  # skipped, as docker and containers/image skip it: not the whole file
            log.warning("%s: auths[%r].auth is not user:password: entry skipped", path, key)
            return None
    token = entry.get("identitytoken")
    token = token if isinstance(token, str) and token else None
    if not isinstance(username, str) or not isinstance(password, str):
        username, password = "", ""
    if not (username or password or token):
        return None  # docker writes {} for registries whose secrets are in credsStore
    return Credentials(username, password, token, source=path)


def _string_map(document: dict[str, Any], name: str, path: str) -> dict[str, str]:
    value = document.get(name)
    value = {} if value is None else value
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise MalformedContent(f"{path}: {name} is not an object of strings")
    return value


def parse_auth_file(raw: bytes, path: str, *, legacy: bool = False) -> AuthFile:
    """Parse either file (``legacy``: docker's ``.dockercfg``, the ``auths`` map alone);
    ``MalformedContent`` naming ``path`` if it is not what it claims."""
    document = load_json_object(raw, path) if raw.strip() else {}
    if legacy:
        document = {"auths": document}
    auths_document = document.get("auths")
    auths_document = {} if auths_document is None else auths_document
    if not isinstance(auths_document, dict):
        raise MalformedContent(f"{path}: auths is not an object")
    auths = {}
    for key, entry in auths_document.items():
        credentials = _credentials(entry, path, key)
        if credentials is not None:
            auths[normalize_key(key)] = credentials
    helpers = {normalize_key(k): v for k, v in _string_map(document, "credHelpers", path).items()}
    store = document.get("credsStore")
    return AuthFile(path, auths, helpers, store if isinstance(store, str) and store else None)


@dataclass(frozen=True, slots=True)
class Found:
    """What a file says for a registry: credentials, or the helper that holds them."""

    credentials: Credentials | None = None
    helper: str | None = None


def find(auth_file: AuthFile, host: str, repository: str) -> Found | None:
    """The file's answer for ``host/repository``, or None when it has none.

    As docker: a ``credHelpers`` entry for the registry wins, then an ``auths`` entry (most
    specific key first, as podman allows namespaces), then ``credsStore``.
    """
    registry = registry_key(host)
    if registry in auth_file.helpers:
        return Found(helper=auth_file.helpers[registry])
    for key in lookup_keys(host, repository):
        if key in auth_file.auths:
            return Found(credentials=auth_file.auths[key])
    if auth_file.store:
        return Found(helper=auth_file.store)
    return None


def parse_helper_output(raw: bytes, helper: str) -> Credentials:
    """``{"Username": …, "Secret": …}`` from ``docker-credential-NAME get``.

    A username of ``<token>`` means the secret is an identity token, as docker does it.
    """
    document = load_json_object(raw, f"docker-credential-{helper}'s output")
    username, secret = document.get("Username"), document.get("Secret")
    if not isinstance(username, str) or not isinstance(secret, str):
        raise MalformedContent(f"docker-credential-{helper}: no Username/Secret in its output")
    source = f"docker-credential-{helper}"
    if username == "<token>":
        return Credentials("", "", secret, source=source)
    return Credentials(username, secret, None, source=source)
