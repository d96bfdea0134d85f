"""Real eStargz images: ``ctr-remote images convert --estargz`` (Debian's
stargz-snapshotter), through a containerd of the tests' own, pushed to a test registry.

``ctr-remote`` works only through a containerd daemon: one is started with its root, state
and socket under a directory of the tests (no systemd, no CRI plugin) and stopped after.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

CONFIG = """version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{root}/containerd.sock"
[ttrpc]
  address = "{root}/containerd.sock.ttrpc"
"""


@contextlib.contextmanager
def containerd(directory: Path) -> Iterator[dict[str, str]]:
    """A private containerd; yields the environment that points ``ctr-remote`` at it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.toml").write_text(CONFIG.format(root=directory))
    environment = os.environ | {
        "CONTAINERD_ADDRESS": str(directory / "containerd.sock"),
        "CONTAINERD_NAMESPACE": "regfs-tests",
    }
    with open(directory / "containerd.log", "wb") as log:
        daemon = subprocess.Popen(
            ["containerd", "--config", str(directory / "config.toml")],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while _run(["ctr-remote", "--timeout", "1s", "version"], environment, check=False):
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise RuntimeError(f"containerd did not start: {directory}/containerd.log")
            time.sleep(0.05)
        yield environment
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def _run(command: list[str], environment: dict[str, str], check: bool = True) -> int:
    result = subprocess.run(command, env=environment, capture_output=True, timeout=600, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.decode()}")
    return result.returncode


def push_estargz(layout: Path, tag: str, destination: str, workdir: Path, *options: str) -> None:
    """Convert the OCI layout's image ``tag`` to eStargz and push it to ``destination``
    (``127.0.0.1:PORT/repository:tag``, plain http); ``options`` go to ``convert``
    (``--estargz-chunk-size``, ``--estargz-record-in``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    archive = workdir / "source.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(layout, arcname=".")
    with containerd(workdir / "containerd") as environment:
        _run(["ctr-remote", "images", "import", "--no-unpack", "--base-name",
              "localhost/source", str(archive)], environment)  # fmt: skip
        _run(["ctr-remote", "images", "convert", "--estargz", "--oci", *options,
              f"localhost/source:{tag}", destination], environment)  # fmt: skip
        _run(["ctr-remote", "images", "push", "--plain-http", destination], environment)
