"""Debian's podman with storage of its own, with a regfs layer store or without one.

Each ``Podman`` has its own ``--root`` and ``--runroot``, so nothing of the machine's
podman is touched and every test (or benchmark run) starts with nothing pulled. podman 4.3
drops storage.conf's ``additionallayerstores`` when ``--root``, ``--runroot`` or
``--storage-driver`` is given, so the store is given by ``--storage-opt
overlay.additionallayerstore=STORE:ref``, the form docs/configuration.md gives for this
case. A registries.conf of its own lets podman speak http to the loopback registries.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

PODMAN_TIMEOUT = 120


def _ulimits() -> list[str]:
    """podman raises a container's NOFILE and NPROC for root by default, which runc cannot
    do without CAP_SYS_RESOURCE (CI sandboxes, containers): none above the shell's."""
    options = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, _ = resource.getrlimit(which)
        limit = 1024 if soft == resource.RLIM_INFINITY else min(soft, 1024)
        options += ["--ulimit", f"{name}={limit}:{limit}"]
    return options


class Podman:
    """podman with storage of its own below ``directory``; with the layer store or not."""

    def __init__(self, directory: Path, store: Path | None, insecure: list[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.root = directory / "root"
        self.run_root = Path(tempfile.mkdtemp(prefix="podman-run-"))  # podman: ≤ 50 characters
        conf = directory / "registries.conf"
        conf.write_text("".join(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n'
                                for host in insecure))  # fmt: skip
        storage = directory / "storage.conf"  # not the host's; podman 4.3 wants both roots
        storage.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{self.root}"\n'
                           f'runroot = "{self.run_root}"\n')  # fmt: skip
        self.environment = {"CONTAINERS_REGISTRIES_CONF": str(conf),
                            "CONTAINERS_STORAGE_CONF": str(storage)}  # fmt: skip
        self.options = ["--root", str(self.root), "--runroot", str(self.run_root),
                        "--storage-driver", "overlay"]  # fmt: skip
        if store is not None:
            self.options += ["--storage-opt", f"overlay.additionallayerstore={store}:ref"]

    def command(self, *arguments: str) -> list[str]:
        return ["podman", *self.options, *arguments]

    def popen(self, *arguments: str) -> subprocess.Popen[str]:
        """podman started with pipes for stdin, stdout and stderr."""
        pipe = subprocess.PIPE
        return subprocess.Popen(self.command(*arguments), stdin=pipe, stdout=pipe, stderr=pipe,
                                text=True, env=os.environ | self.environment)  # fmt: skip

    def __call__(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*arguments), capture_output=True, text=True,
            env=os.environ | self.environment, timeout=PODMAN_TIMEOUT, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(arguments)}: {result.stderr}")
        return result

    @staticmethod
    def run_options() -> list[str]:
        """What every container is run with: no network, removed after, no rlimit raised."""
        return ["--rm", "--network", "none", *_ulimits()]

    def run(self, image: str, *command: str) -> subprocess.CompletedProcess[str]:
        return self("run", *self.run_options(), image, *command, check=False)

    def layers(self, image: str) -> list[str]:
        """The image's layers as podman records them (their diff_ids), bottom first."""
        layers: list[str] = json.loads(self("image", "inspect", "--format",
                                            "{{json .RootFS.Layers}}", image).stdout)  # fmt: skip
        return layers

    def layer_records(self) -> dict[str, dict[str, object]]:
        """podman's own record of each layer in its storage, by diff digest (what a layer
        store's ``info`` gives it: ``diff-size``, ``compressed-size``, ``compression``…)."""
        path = self.root / "overlay-layers" / "layers.json"
        records: list[dict[str, object]] = json.loads(path.read_text()) if path.exists() else []
        return {str(record["diff-digest"]): record for record in records}

    def store_layers(self) -> int:
        """Layers of podman's storage that are the store's (CreateAs marks them)."""
        return len(list((self.root / "overlay").glob("*/additionallayer")))

    def close(self) -> None:
        self("rm", "--all", "--force", check=False)
        self("rmi", "--all", "--force", check=False)
        shutil.rmtree(self.run_root, ignore_errors=True)
