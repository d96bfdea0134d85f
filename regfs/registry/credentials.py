"""Where credentials for a registry come from: the files docker and podman keep them in.

Registry layer. Files are searched in podman's order, and the first that has an answer
for a registry wins: ``--auth-file`` (or ``REGISTRY_AUTH_FILE``) alone if given, else
``$XDG_RUNTIME_DIR/containers/auth.json``, ``$XDG_CONFIG_HOME/containers/auth.json``
(``~/.config/…``), ``$DOCKER_CONFIG/config.json`` (``~/.docker/config.json``), and
docker's legacy ``~/.dockercfg``. A file is
parsed again when it changes, so ``podman login`` takes effect without a remount.
Credential helpers (``docker-credential-NAME get``) run with a deadline and are killed
when they hang; their answers are kept for a minute.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cachetools
import trio

from regfs.domain.errors import AccessDenied, MalformedContent
from regfs.registry.authfile import (
    AuthFile,
    Credentials,
    find,
    helper_server_urls,
    parse_auth_file,
    parse_helper_output,
    registry_key,
)

LEGACY_DOCKER_CONFIG = ".dockercfg"
"""docker's file before config.json (its ``auths`` map at the top level): searched last,
as containers/image does."""
HELPER_ANSWERS_KEPT = 60.0
"""Seconds a helper's answer (or failure) is reused: helpers may prompt a keyring or hang,
so ask rarely."""
MAX_AUTH_FILE_BYTES = 1 << 20


class CredentialProvider(Protocol):
    async def credentials_for(self, host: str, repository: str) -> Credentials | None:
        """Credentials for ``host`` (the API host, e.g. ``registry-1.docker.io``) and
        ``repository`` (may be empty: the catalog), or None to go anonymously."""
        ...


class Anonymous:
    """Never has credentials: every token is requested anonymously."""

    async def credentials_for(self, host: str, repository: str) -> Credentials | None:
        return None


def auth_file_paths(
    environment: Mapping[str, str], auth_file: Path | None, *, uid: int | None = None
) -> list[Path]:
    """The files to search, in podman's order (``auth_file`` alone if given). Without
    ``XDG_RUNTIME_DIR`` (a system service, ``sudo``) podman keeps its logins in
    ``/run/containers/UID/auth.json``: a layer store run by systemd finds root's there."""
    if auth_file is not None:
        return [auth_file]
    if environment.get("REGISTRY_AUTH_FILE"):
        return [Path(environment["REGISTRY_AUTH_FILE"])]
    home = Path(environment.get("HOME") or os.path.expanduser("~"))
    paths = []
    if environment.get("XDG_RUNTIME_DIR"):
        paths.append(Path(environment["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    else:
        paths.append(Path(f"/run/containers/{os.getuid() if uid is None else uid}/auth.json"))
    config_home = Path(environment.get("XDG_CONFIG_HOME") or home / ".config")
    paths.append(config_home / "containers" / "auth.json")
    docker_config = Path(environment.get("DOCKER_CONFIG") or home / ".docker")
    paths.append(docker_config / "config.json")
    paths.append(home / LEGACY_DOCKER_CONFIG)
    return paths


@dataclass(frozen=True, slots=True)
class _Version:
    mtime_ns: int
    size: int


class DockerCredentials:
    """Credentials from docker's and podman's files and credential helpers."""

    def __init__(self, paths: list[Path], helper_timeout: float) -> None:
        self.paths = paths
        self._helper_timeout = helper_timeout
        self._parsed: dict[Path, tuple[_Version, AuthFile]] = {}
        self._helper_answers: cachetools.TTLCache[
            tuple[str, str], Credentials | AccessDenied | None
        ] = cachetools.TTLCache(256, HELPER_ANSWERS_KEPT, timer=trio.current_time)

    async def credentials_for(self, host: str, repository: str) -> Credentials | None:
        """The first answer in the files' order; a helper with nothing for ``host`` is no
        answer (containers/image goes on to the next file then, too)."""
        for path in self.paths:
            auth_file = self._load(path)
            found = find(auth_file, host, repository) if auth_file else None
            if found is None:
                continue
            if found.helper is None:
                return found.credentials
            answer = await self._from_helper(found.helper, host, path)
            if answer is not None:
                return answer
        return None

    def _load(self, path: Path) -> AuthFile | None:
        """The file's contents, parsed again only when its mtime or size changed; None if
        it does not exist.

        A file that cannot be read or parsed is ``AccessDenied`` naming it, as in
        containers/image: skipping it would send the next file's identity, or none, and
        show another tree. It is read again on the next request, once it may be fixed.
        """
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            self._parsed.pop(path, None)
            return None
        except OSError as error:
            raise _unreadable(path, error) from None
        version = _Version(info.st_mtime_ns, info.st_size)
        cached = self._parsed.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            raw = path.read_bytes()[:MAX_AUTH_FILE_BYTES]
            auth_file = parse_auth_file(raw, str(path), legacy=path.name == LEGACY_DOCKER_CONFIG)
        except OSError as error:
            raise _unreadable(path, error) from None
        except MalformedContent as error:
            raise AccessDenied(str(error)) from None
        self._parsed[path] = (version, auth_file)
        return auth_file

    async def _from_helper(self, helper: str, host: str, path: Path) -> Credentials | None:
        key = (helper, registry_key(host))
        if key in self._helper_answers:
            answer = self._helper_answers[key]
        else:
            try:
                answer = await self._ask_helper(helper, host, path)
            except AccessDenied as error:
                answer = error  # a helper that hung once is not waited for on every request
            self._helper_answers[key] = answer
        if isinstance(answer, AccessDenied):
            raise answer
        return answer

    async def _ask_helper(self, helper: str, host: str, path: Path) -> Credentials | None:
        """The helper's answer under the first of ``host``'s names it has one for."""
        for server in helper_server_urls(host):
            answer = await run_helper(helper, server, self._helper_timeout, path)
            if answer is not None:
                return answer
        return None


def _unreadable(path: Path, error: OSError) -> AccessDenied:
    return AccessDenied(f"{path}: cannot read: {error.strerror or error}")


async def _kill(process: trio.Process) -> None:
    process.kill()  # a helper that hangs gets no grace period: the caller is waiting


async def run_helper(
    helper: str, server: str, timeout: float, named_in: Path
) -> Credentials | None:
    """``docker-credential-HELPER get`` for ``server``; None if it has nothing for it.

    A helper that fails, hangs past ``timeout`` or cannot be run is ``AccessDenied``: the
    user asked for credentials from it, so going on anonymously would show another tree.
    """
    program = f"docker-credential-{helper}"
    what = f"{program} (named in {named_in}) for {server}"
    try:
        # Its own deadline, shielded from the request's (which is as long): a hanging
        # helper must end as a refusal naming it, not as the request's timeout.
        with trio.CancelScope(shield=True), trio.fail_after(timeout):
            result = await trio.run_process(
                [program, "get"],
                stdin=server.encode(),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                deliver_cancel=_kill,
            )
    except trio.TooSlowError:
        raise AccessDenied(f"{what}: no answer within {timeout:g}s, killed") from None
    except OSError as error:
        raise AccessDenied(f"{what}: cannot run: {error.strerror or error}") from None
    if result.returncode != 0:
        message = (result.stdout + result.stderr).decode(errors="replace").strip()
        if "credentials not found" in message.lower():
            return None
        raise AccessDenied(f"{what}: failed ({result.returncode}): {message[:200]}")
    try:
        return parse_helper_output(result.stdout, helper)
    except MalformedContent as error:
        raise AccessDenied(f"{what}: {error}") from None
