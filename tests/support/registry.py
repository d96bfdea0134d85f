"""Debian's docker-registry (distribution's registry:2) on a free loopback port."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port, wait_until


@dataclass(frozen=True)
class TokenAuth:
    realm: str
    service: str
    issuer: str
    root_cert_bundle: Path


def _config(storage: Path, port: int, token: TokenAuth | None) -> str:
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
    return "\n".join(lines) + "\n"


class Registry:
    """A running registry:2; ``host`` is ``127.0.0.1:PORT``."""

    def __init__(self, workdir: Path, token: TokenAuth | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        config = workdir / "config.yml"
        config.write_text(_config(workdir / "storage", self.port, token))
        self._log = open(workdir / "registry.log", "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=self._log, stderr=self._log
        )
        wait_until(self._answers, 15, f"registry on {self.host}")

    def _answers(self) -> bool:
        if self._process.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {self._process.returncode}")
        try:
            urllib.request.urlopen(f"{self.url}/v2/", timeout=1)
        except urllib.error.HTTPError:
            return True  # 401 from a token-auth registry: it is up
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._log.close()
