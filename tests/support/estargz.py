"""Real eStargz images: ``ctr-remote images convert --estargz`` (Debian's
stargz-snapshotter), through a containerd of the tests' own, pushed to a test registry.

``ctr-remote`` works only through a containerd daemon: one is started with its root, state
and socket under a directory of the tests (no systemd, no CRI plugin) and stopped after.
Converting the layered Debian image costs 20 to 30 s on two busy cores, so an
``EstargzConverter`` keeps one containerd for a whole session, converts each (image,
options) once, may begin a conversion in the background before a test needs it, and
pushes the result to whichever registry asks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


Conversion = tuple[Path, str, tuple[str, ...]]
"""What a converted image is made from: an OCI layout, its tag, and ``convert``'s options."""


class EstargzConverter:
    """eStargz conversions for a test session, each made once and kept in a private
    containerd until the converter is closed: in the caller's thread when a test needs one
    now, or begun early in a background thread (niced, so that the tests running meanwhile
    keep the CPU they need)."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self._workdir = workdir
        self._closed = False
        self._stack = contextlib.ExitStack()
        self._environment: dict[str, str] | None = None
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="estargz")
        self._lock = threading.Lock()
        self._importing = threading.Lock()
        self._imported: dict[tuple[Path, str], str] = {}
        """(layout, tag) → the name it was imported as."""
        self._converted: dict[Conversion, Future[str]] = {}
        """What was asked for → the name of the converted image in containerd."""

    def close(self) -> None:
        """Stop containerd, which ends a conversion nobody waited for, then the thread."""
        self._background.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._closed = True
        self._stack.close()
        self._background.shutdown(wait=True)

    def start(self, layout: Path, tag: str, *options: str) -> None:
        """Begin converting the OCI layout's image ``tag`` with ``options`` for ``convert``
        (``--estargz-chunk-size``, ``--estargz-record-in``) in the background, unless that
        was begun before."""
        key = (layout, tag, options)
        with self._lock:
            if key not in self._converted:
                self._converted[key] = self._background.submit(self._convert, key, nice=True)

    def push(self, layout: Path, tag: str, destination: str, *options: str) -> None:
        """Push the conversion of ``layout:tag`` with ``options`` (made now, unless it was
        made or begun before) to ``destination`` (``127.0.0.1:PORT/repository:tag``, plain
        http)."""
        key = (layout, tag, options)
        with self._lock:
            conversion = self._converted.get(key)
            mine = conversion is None
            if conversion is None:
                conversion = self._converted[key] = Future()
        if mine:  # not begun: made here, so it waits behind no background conversion
            try:
                conversion.set_result(self._convert(key, nice=False))
            except BaseException as error:
                conversion.set_exception(error)
                raise
        try:
            self._ctr("images", "push", "--plain-http", destination, conversion.result())
        except RuntimeError:
            # once in a full suite on two busy cores, containerd's read of a blob it holds
            # failed mid-push ("rpc error: code = Internal desc = unexpected EOF"); a push
            # is idempotent, and a second failure is reported
            self._ctr("images", "push", "--plain-http", destination, conversion.result())

    def _convert(self, key: Conversion, *, nice: bool) -> str:
        layout, tag, options = key
        converted = f"localhost/estargz-{hashlib.sha256(repr(key).encode()).hexdigest()[:16]}:{tag}"
        # ``--zstdchunked`` among the options makes a zstd:chunked image instead of eStargz
        kind = () if "--zstdchunked" in options else ("--estargz",)
        self._ctr("images", "convert", *kind, "--oci", *options,
                  f"{self._source(layout, tag)}:{tag}", converted, nice=nice)  # fmt: skip
        return converted

    def _source(self, layout: Path, tag: str) -> str:
        """The name ``layout:tag`` was imported as (imported now if it was not)."""
        with self._importing:
            if (layout, tag) not in self._imported:
                name = f"source-{len(self._imported)}"
                archive = self._workdir / f"{name}.tar"
                with tarfile.open(archive, "w") as tar:
                    tar.add(layout, arcname=".")
                self._ctr("images", "import", "--no-unpack", "--base-name", f"localhost/{name}",
                          str(archive))  # fmt: skip
                archive.unlink()
                self._imported[(layout, tag)] = f"localhost/{name}"
            return self._imported[(layout, tag)]

    def _ctr(self, *arguments: str, nice: bool = False) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"ctr-remote {arguments[0]} {arguments[1]}: converter closed")
            if self._environment is None:
                self._environment = self._stack.enter_context(
                    containerd(self._workdir / "containerd")
                )
        prefix = ["nice", "-n", "10"] if nice else []
        _run([*prefix, "ctr-remote", *arguments], self._environment)


@contextlib.contextmanager
def estargz_converter(workdir: Path) -> Iterator[EstargzConverter]:
    """An ``EstargzConverter`` working in ``workdir``, closed after."""
    converter = EstargzConverter(workdir)
    try:
        yield converter
    finally:
        converter.close()


def push_estargz(layout: Path, tag: str, destination: str, workdir: Path, *options: str) -> None:
    """Convert the OCI layout's image ``tag`` to eStargz and push it to ``destination``
    (``127.0.0.1:PORT/repository:tag``, plain http), in a containerd of its own."""
    with estargz_converter(workdir) as converter:
        converter.push(layout, tag, destination, *options)
