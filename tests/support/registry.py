"""Debian's docker-registry (distribution's registry:2) on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from tests.support.net import free_port, wait_until


@dataclass(frozen=True)
class TokenAuth:
    realm: str
    service: str
    issuer: str
    root_cert_bundle: Path


@dataclass(frozen=True)
class BasicAuth:
    """``auth: htpasswd``: every request needs this user's password (bcrypt in the file)."""

    username: str
    password: str

    def write_htpasswd(self, path: Path) -> None:
        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        path.write_text(f"{self.username}:{hashed}\n")


@dataclass(frozen=True)
class ServerTls:
    """``http.tls``: the registry's certificate, and the CAs its clients must be signed by."""

    certificate: Path
    key: Path
    client_cas: Path | None = None


def _config(
    storage: Path,
    port: int,
    token: TokenAuth | None,
    *,
    htpasswd: Path | None = None,
    tls: ServerTls | None = None,
    proxy_remote: str | None = None,
) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {storage}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "catalog:",
        "  maxentries: 2",  # so that every catalog of more than two repositories is paged
        "compatibility:",
        "  schema1:",
        "    enabled: true",  # so that skopeo --format v2s1 can push
    ]
    if token is not None:
        lines += [
            "auth:",
            "  token:",
            f"    realm: {token.realm}",
            f"    service: {token.service}",
            f"    issuer: {token.issuer}",
            f"    rootcertbundle: {token.root_cert_bundle}",
        ]
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: regfs-tests", f"    path: {htpasswd}"]
    if tls is not None:
        http = lines.index("http:") + 2
        lines[http:http] = ["  tls:", f"    certificate: {tls.certificate}", f"    key: {tls.key}"]
        if tls.client_cas is not None:
            lines[http + 3 : http + 3] = ["    clientcas:", f"      - {tls.client_cas}"]
    if proxy_remote is not None:
        lines += ["proxy:", f"  remoteurl: {proxy_remote}"]
    return "\n".join(lines) + "\n"


class Registry:
    """A running registry:2; ``host`` is ``127.0.0.1:PORT``."""

    def __init__(
        self,
        workdir: Path,
        token: TokenAuth | None = None,
        basic: BasicAuth | None = None,
        tls: ServerTls | None = None,
        proxy_remote: str | None = None,
    ) -> None:
        """``proxy_remote``: a pull-through cache of that registry URL (proxy mode)."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        htpasswd = None
        if basic is not None:
            htpasswd = workdir / "htpasswd"
            basic.write_htpasswd(htpasswd)
        config = workdir / "config.yml"
        config.write_text(
            _config(
                workdir / "storage",
                self.port,
                token,
                htpasswd=htpasswd,
                tls=tls,
                proxy_remote=proxy_remote,
            )
        )
        self._config = config
        self._log = open(workdir / "registry.log", "ab")  # noqa: SIM115 - closed in stop()
        self.start()

    def start(self) -> None:
        """(Re)start the process on the same port and storage."""
        self._process = subprocess.Popen(
            ["docker-registry", "serve", str(self._config)], stdout=self._log, stderr=self._log
        )
        wait_until(self._answers, 15, f"registry on {self.host}")

    def start_if_killed(self) -> None:
        """Start the process again if it is not running (a test killed it)."""
        if self._process.poll() is not None:
            self.start()

    def kill(self) -> None:
        """Kill the process (SIGKILL), as a crash would; ``start`` brings it back."""
        self._process.kill()
        self._process.wait(10)

    def _answers(self) -> bool:
        if self._process.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {self._process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True  # listening (TLS and auth variants answer nothing else plainly)
        except OSError:
            return False

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._log.close()
