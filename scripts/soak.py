#!/usr/bin/env python3
"""Soak runs: regfs under load for minutes, checking every byte it serves.

The tests check one behaviour at a time; a soak checks what only shows over time and
under concurrency: wrong bytes under races, single flight, memory or descriptor growth, a
hang, a traceback, a daemon that dies. Two modes:

``readers``  16 threads pread random ranges (4 KiB to 1 MiB) of every regular file of every
             layer dir and of ``rootfs/`` of the layered Debian image, each compared with
             the bytes GNU ``tar -x`` (layer dirs) and ``umoci unpack`` (``rootfs/``) give
             for the same blobs. The kernel's page cache of each file is dropped after
             each read, so reads reach the daemon instead of the kernel.
``faults``   a few readers, a lister (catalog, tag lists, tag targets, a manifest) and a
             pusher of fresh images (so that first downloads, new manifests and new tags
             keep happening) run against a mount with a short ``--metadata-ttl`` while a
             fault is armed in the proxy every few seconds: 503, 429, reset, stall,
             trickle, truncation, corruption, or the registry killed and restarted.

Both print a report (markdown tables) and can write a JSON summary. They reuse
tests/support as scripts/bench.py does, and measure regfs as users install it (a wheel in
a fresh venv) unless ``--venv`` is given. Needs root, FUSE and the tools
scripts/install.sh installs.

Run: .venv/bin/python scripts/soak.py readers --cache-size default --cache-size 64M
     .venv/bin/python scripts/soak.py faults --duration 600
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import errno
import functools
import gzip
import hashlib
import http.client
import io
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import images
from tests.support.crafted import upload_blob
from tests.support.installed import install_wheel
from tests.support.layered import build_layered, debian_rootfs
from tests.support.mount import Installation, Mount
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry
from tests.support.trees import extract_layer

ROOT = Path(__file__).resolve().parent.parent

KIB = 1 << 10
MIB = 1 << 20
TAG = "1"
REPOSITORY = "soak/debian"
FRESH_REPOSITORY = "soak/fresh"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback")


# --------------------------------------------------------------------------------------
# The oracle: what every regular file must contain, from tools that are not regfs


@dataclass(frozen=True)
class Target:
    """A regular file as regfs shows it, and the same file as an independent tool wrote it."""

    mounted: Path
    expected: Path
    size: int


class Targets:
    """Files to read: half the picks uniform over files (so the thousands of small files and
    their headers are read), half weighted by size (so big files are read all over)."""

    def __init__(self, targets: list[Target]) -> None:
        self.all = targets
        self._cumulative: list[int] = []
        total = 0
        for target in targets:
            total += target.size
            self._cumulative.append(total)

    def pick(self, rng: random.Random) -> Target:
        if rng.random() < 0.5 or self._cumulative[-1] == 0:
            return rng.choice(self.all)
        point = rng.randrange(self._cumulative[-1])
        return self.all[bisect.bisect_right(self._cumulative, point)]


def run(*command: str | Path) -> None:
    subprocess.run([str(c) for c in command], check=True, capture_output=True)


def build_oracle(layout: Path, manifest: dict[str, Any], destination: Path) -> None:
    """Each layer blob unpacked alone by GNU tar (what ``i/`` must show, whiteouts aside),
    and the image by ``umoci unpack`` (what ``rootfs/`` must show)."""
    if (destination / "complete").exists():
        return
    shutil.rmtree(destination, ignore_errors=True)
    for number, layer in enumerate(manifest["layers"]):
        blob = layout / "blobs/sha256" / layer["digest"].split(":")[1]
        extract_layer(blob, destination / "layers" / str(number))  # the tests' oracle
    run("umoci", "unpack", "--image", f"{layout}:{TAG}", destination / "bundle")
    (destination / "complete").write_text("")


def regular_files(root: Path, *, whiteouts: bool) -> dict[str, int]:
    """Relative path → size of every regular file below ``root``; ``.wh.`` names (files in a
    tar, character devices or xattrs in regfs's layer dirs) are left out unless asked."""
    found: dict[str, int] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            if name.startswith(".wh.") and not whiteouts:
                continue
            path = os.path.join(directory, name)
            status = os.lstat(path)
            if status.st_mode & 0o170000 == 0o100000:
                found[os.path.relpath(path, root)] = status.st_size
    return found


def oracle_dirs(oracle: Path, layers: int) -> dict[str, Path]:
    """Image subdir name → the oracle's tree for it."""
    dirs = {str(number): oracle / "layers" / str(number) for number in range(layers)}
    dirs["rootfs"] = oracle / "bundle/rootfs"
    return dirs


def targets_for(image: Path, oracle: Path, layers: int) -> Targets:
    """Every regular file of every layer dir and of rootfs/, taken from the oracle (so
    readers start cold, concurrently, before regfs has listed anything)."""
    targets = [
        Target(image / name / relative, tree / relative, size)
        for name, tree in oracle_dirs(oracle, layers).items()
        for relative, size in sorted(regular_files(tree, whiteouts=False).items())
    ]
    return Targets(targets)


def listing_differences(image: Path, oracle: Path, layers: int) -> list[str]:
    """Regular files (names and sizes) regfs lists that the oracle does not, and back."""
    differences = []
    for name, tree in oracle_dirs(oracle, layers).items():
        expected = regular_files(tree, whiteouts=False)
        shown = regular_files(image / name, whiteouts=False)
        for path in sorted(expected.keys() ^ shown.keys())[:5]:
            where = "only regfs" if path in shown else "only the oracle"
            differences.append(f"{name}/{path}: {where}")
        for path in sorted(p for p in expected.keys() & shown.keys() if expected[p] != shown[p]):
            differences.append(f"{name}/{path}: size {shown[path]}, expected {expected[path]}")
    return differences


# --------------------------------------------------------------------------------------
# The proxy: CountingProxy plus per-request accounting and the faults it lacks


class SoakProxy(CountingProxy):
    """CountingProxy (whose ``faults`` list injects every fault) plus what a soak needs:

    - every request counted by (what, method): a blob by digest as ``GET`` (whole),
      ``GET range`` or ``HEAD``, so single flight can be checked per digest;
    - ``arm``/``disarm``: one episode's faults, labelled with its kind;
    - ``hits``: when each armed fault met a request, with the kind it was armed as;
    - a 502 when the registry refuses the connection (killed), as a reverse proxy
      answers, instead of a traceback on the proxy's stderr.
    """

    def __init__(self, upstream_port: int) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.hits: list[tuple[float, str, str, str]] = []
        self.armed_kind = ""
        super().__init__(upstream_port)
        self.trickle_rate = 2 * KIB  # a 1 MiB answer in ~8 minutes, cut off sooner

    def arm(self, kind: str, where: str, faults: list[str]) -> None:
        with self._lock:
            self.armed_kind = kind
            self.faults = [(where, fault) for fault in faults]

    def disarm(self) -> None:
        with self._lock:
            self.faults = []

    def count(self, method: str, path: str, ranged: bool) -> None:
        path = path.split("?", maxsplit=1)[0]
        if "/blobs/" in path:
            what = path.rsplit("/", 1)[1]
            method = "GET range" if method == "GET" and ranged else method
        else:
            what = next((w for w in ("manifests", "tags/list", "_catalog") if w in path), path)
        with self._lock:
            self.requests[(what, method)] += 1

    def fault_met(self, fault: str, method: str, path: str) -> None:
        self.hits.append((time.monotonic(), self.armed_kind, fault, f"{method} {path}"))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        base: Any = super()._handler()
        proxy = self

        class Handler(base):  # type: ignore[misc]
            def _forward(self) -> None:
                proxy.count(self.command, self.path, "Range" in self.headers)
                try:
                    super()._forward()
                except ConnectionRefusedError:
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except (OSError, http.client.HTTPException):  # the registry was killed
                    self.close_connection = True

        return Handler


# --------------------------------------------------------------------------------------
# Recording what callers saw


@dataclass(frozen=True)
class Op:
    """One caller-level operation (a read is open + pread + close; a listing is
    opendir + getdents + close), timed from the caller's side."""

    kind: str
    start: float
    seconds: float
    outcome: str
    """``ok``, ``wrong`` (bytes differ from the oracle) or an errno name."""
    where: str


Check = tuple[int, int, str]
"""What an operation saw: (bytes read, wrong bytes, how they were wrong)."""


def errno_name(error: OSError) -> str:
    if error.errno is None:
        return type(error).__name__
    return errno.errorcode.get(error.errno, f"errno {error.errno}")


class Recorder:
    """Every operation of every thread, the bytes they read and every wrong byte."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ops: list[Op] = []
        self.bytes_read = 0
        self.wrong_bytes = 0
        self.wrong_examples: list[str] = []
        self.in_flight: dict[int, tuple[str, str, float]] = {}

    def run(self, kind: str, where: str, action: Callable[[], Check]) -> str:
        """Do ``action``, record how it ended and how long it took; its outcome."""
        me = threading.get_ident()
        start = time.monotonic()
        with self._lock:
            self.in_flight[me] = (kind, where, start)
        wrong, detail, nbytes = 0, "", 0
        try:
            nbytes, wrong, detail = action()
            outcome = "wrong" if wrong else "ok"
        except OSError as error:
            outcome = errno_name(error)
        seconds = time.monotonic() - start
        with self._lock:
            del self.in_flight[me]
            self.ops.append(Op(kind, start, seconds, outcome, where))
            self.bytes_read += nbytes
            self.wrong_bytes += wrong
            if wrong and len(self.wrong_examples) < 20:
                self.wrong_examples.append(f"{kind} {where}: {detail}")
        return outcome

    def oldest_in_flight(self) -> tuple[float, str]:
        now = time.monotonic()
        with self._lock:
            if not self.in_flight:
                return 0.0, ""
            kind, where, start = min(self.in_flight.values(), key=lambda entry: entry[2])
        return now - start, f"{kind} {where}"


def pread_fully(fd: int, length: int, offset: int) -> bytes:
    """What a careful reader does: pread until ``length`` bytes or end of file."""
    parts = []
    while length > 0:
        part = os.pread(fd, length, offset)
        if not part:
            break
        parts.append(part)
        length -= len(part)
        offset += len(part)
    return b"".join(parts)


def compare(got: bytes, expected: bytes) -> tuple[int, str]:
    """Wrong bytes (differing positions plus the length difference), and where."""
    if got == expected:
        return 0, ""
    differing = sum(a != b for a, b in zip(got, expected, strict=False))
    wrong = differing + abs(len(got) - len(expected))
    first = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), -1)
    return wrong, f"{len(got)} bytes, expected {len(expected)}, first difference at +{first}"


def checked_read(target: Target, offset: int, length: int, drop_cache: bool) -> Check:
    with open(target.expected, "rb") as local:
        expected = pread_fully(local.fileno(), length, offset)
    fd = os.open(target.mounted, os.O_RDONLY)
    try:
        got = pread_fully(fd, length, offset)
        if drop_cache:  # the next read of this file must reach the daemon again
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    wrong, detail = compare(got, expected)
    return len(got), wrong, f"offset {offset} length {length}: {detail}"


def random_read(recorder: Recorder, targets: Targets, rng: random.Random, drop: bool) -> str:
    target = targets.pick(rng)
    length = rng.randint(4 * KIB, MIB)
    offset = rng.randrange(target.size) if target.size else 0
    return recorder.run(
        "read", str(target.mounted), lambda: checked_read(target, offset, length, drop)
    )


# --------------------------------------------------------------------------------------
# The daemon from outside: memory, descriptors, cache dir, log


@dataclass
class Sample:
    second: float
    rss_kib: int
    fds: int
    cache_bytes: int
    oldest_op: float


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1])


def disk_usage(path: Path) -> int:
    total = 0
    for directory, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):  # evicted meanwhile
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


class Sampler(threading.Thread):
    """Once a second: the daemon's VmRSS and open descriptors, the cache dir's bytes, and
    the age of the oldest operation still in flight (a hang shows there first)."""

    def __init__(self, pid: int, cache_dir: Path, recorder: Recorder) -> None:
        super().__init__(daemon=True)
        self.pid, self.cache_dir, self.recorder = pid, cache_dir, recorder
        self.samples: list[Sample] = []
        self.died_at: float | None = None
        self.longest_in_flight = (0.0, "")
        self._stop_event = threading.Event()
        self._start = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.wait(1.0):
            second = time.monotonic() - self._start
            try:
                rss = rss_kib(self.pid)
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            except (OSError, StopIteration):
                self.died_at = second
                return
            oldest = self.recorder.oldest_in_flight()
            self.longest_in_flight = max(self.longest_in_flight, oldest)
            cache = disk_usage(self.cache_dir)
            self.samples.append(Sample(second, rss, fds, cache, oldest[0]))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def daemon_state(pid: int) -> str:
    """``alive``, ``zombie`` or ``gone``."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "gone"
    return "zombie" if re.search(r"^State:\s+Z", status, re.MULTILINE) else "alive"


def answers(path: Path, seconds: float = 10) -> bool:
    """Whether a ``stat`` of the mount returns within ``seconds`` (a hung daemon never
    answers: the stat is left in a daemon thread)."""
    done = threading.Event()

    def probe() -> None:
        with contextlib.suppress(OSError):
            os.stat(path)
            done.set()

    threading.Thread(target=probe, daemon=True).start()
    return done.wait(seconds)


def log_summary(text: str) -> dict[str, Any]:
    """Lines per level, tracebacks, and the most frequent warning/error messages (digits and
    digests folded, so that one kind of message counts once)."""
    levels: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    for line in text.splitlines():
        match = re.match(r"\S+ \S+ \d+ ([A-Z]+) (.*)", line)
        if not match:
            continue
        levels[match[1]] += 1
        if match[1] in ("WARNING", "ERROR", "CRITICAL"):
            folded = re.sub(r"[0-9a-f]{12,}", "<hex>", match[2])
            messages[re.sub(r"\d+(\.\d+)?", "N", folded)[:160]] += 1
    return {
        "lines_by_level": dict(levels),
        "tracebacks": text.count("Traceback"),
        "problem_lines": sum(1 for line in text.splitlines() if PROBLEM.search(line)),
        "top_messages": messages.most_common(12),
    }


def memory_figures(samples: list[Sample]) -> dict[str, Any]:
    if not samples:
        return {}
    rss = [s.rss_kib / 1024 for s in samples]
    fds = [s.fds for s in samples]
    tail = rss[-max(1, len(rss) // 4) :]
    first_minute = [s.rss_kib / 1024 for s in samples if s.second <= 60]
    last_minute = [s.rss_kib / 1024 for s in samples if s.second >= samples[-1].second - 60]
    return {
        "samples": len(samples),
        "rss_mib_first": round(rss[0], 1),
        "rss_mib_peak": round(max(rss), 1),
        "rss_mib_min": round(min(rss), 1),
        "rss_mib_steady_median_last_quarter": round(statistics.median(tail), 1),
        "rss_mib_last": round(rss[-1], 1),
        "rss_mib_first_minute_mean": round(statistics.fmean(first_minute), 1),
        "rss_mib_last_minute_mean": round(statistics.fmean(last_minute), 1),
        "fds_first": fds[0],
        "fds_min": min(fds),
        "fds_max": max(fds),
        "fds_last": fds[-1],
        "cache_dir_mib_peak": round(max(s.cache_bytes for s in samples) / MIB, 1),
        "cache_dir_mib_last": round(samples[-1].cache_bytes / MIB, 1),
        "cache_dir_mib_peak_second_half": round(
            max(s.cache_bytes for s in samples[len(samples) // 2 :]) / MIB, 1
        ),
        "rss_mib_every_10s": [round(s.rss_kib / 1024, 1) for s in samples[9::10]],
        "rss_mib_per_minute": [round(statistics.fmean(s.rss_kib for s in minute) / 1024, 1)
                               for minute in per_minute(samples)],
        "fds_per_minute_max": [max(s.fds for s in minute) for minute in per_minute(samples)],
    }  # fmt: skip


def per_minute(samples: list[Sample]) -> list[list[Sample]]:
    minutes: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        minutes[int(sample.second // 60)].append(sample)
    return [minutes[minute] for minute in sorted(minutes)]


def latency_figures(ops: list[Op]) -> dict[str, float]:
    if not ops:
        return {}
    seconds = sorted(op.seconds for op in ops)
    return {
        "p50_ms": round(seconds[len(seconds) // 2] * 1000, 2),
        "p99_ms": round(seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))] * 1000, 2),
        "max_s": round(seconds[-1], 3),
    }


# --------------------------------------------------------------------------------------
# Setting the stage: installation, image, oracle, registry, proxy


@dataclass
class Stage:
    workdir: Path
    registry: Registry
    proxy: SoakProxy
    manifest: dict[str, Any]
    oracle: Path
    image_dirs: int = field(init=False)

    def __post_init__(self) -> None:
        self.image_dirs = len(self.manifest["layers"])

    def image(self, mount: Mount) -> Path:
        return mount / self.proxy.host / REPOSITORY / TAG

    def mount(self, name: str, *options: str) -> Mount:
        path = self.workdir / name
        shutil.rmtree(path.with_name(name + ".cache"), ignore_errors=True)
        path.with_name(name + ".log").unlink(missing_ok=True)
        return Mount(path, *options)


def source_state() -> str:
    """Which regfs is measured: the commit, and whether regfs/ differs from it."""

    def git(*args: str) -> str:
        command = ["git", "-C", str(ROOT), *args]
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()

    dirty = git("status", "--porcelain", "--", "regfs", "pyproject.toml")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes in regfs/" * bool(dirty))


@contextlib.contextmanager
def staged(arguments: argparse.Namespace) -> Iterator[Stage]:
    """The layered Debian image (kept in ``--workdir`` across runs), its oracle, a fresh
    registry:2 with the image pushed, and the proxy regfs will talk to."""
    workdir = arguments.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if not arguments.venv:
        shutil.rmtree(workdir / "installed", ignore_errors=True)
        Installation.use(install_wheel(workdir / "installed"))
    if not (workdir / "debian/etc/os-release").exists():
        shutil.rmtree(workdir / "debian", ignore_errors=True)
        debian_rootfs(workdir / "debian")
    layout = workdir / f"oci-{arguments.big_file_mib}"
    if not (layout / "index.json").exists():
        shutil.rmtree(layout, ignore_errors=True)
        build_layered(layout, TAG, workdir / "debian", big_file_size=arguments.big_file_mib * MIB)
    shutil.rmtree(workdir / "registry", ignore_errors=True)
    registry = Registry(workdir / "registry")
    proxy = SoakProxy(registry.port)
    try:
        images.push(layout, TAG, f"{registry.host}/{REPOSITORY}:{TAG}")
        manifest = json.loads(images.get_manifest(registry.url, REPOSITORY, TAG)[0])
        oracle = workdir / f"oracle-{arguments.big_file_mib}"
        build_oracle(layout, manifest, oracle)
        yield Stage(workdir, registry, proxy, manifest, oracle)
    finally:
        proxy.stop()
        with contextlib.suppress(Exception):  # already killed by a fault run
            registry.stop()


def describe_image(stage: Stage, targets: Targets) -> dict[str, Any]:
    layers = stage.manifest["layers"]
    uncompressed = sum(
        disk_usage(tree) for name, tree in oracle_dirs(stage.oracle, len(layers)).items()
        if name != "rootfs"
    )  # fmt: skip
    return {
        "layers_compressed_mib": [round(layer["size"] / MIB, 1) for layer in layers],
        "layers_unpacked_mib": round(uncompressed / MIB, 1),
        "regular_files": len(targets.all),
        "regular_file_mib": round(sum(t.size for t in targets.all) / MIB, 1),
    }


def close_mount(mount: Mount) -> str:
    try:
        mount.close()
    except (AssertionError, subprocess.SubprocessError) as error:
        return f"unmount failed: {error}"
    return "unmounted"


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.machine(),
    )  # fmt: skip
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"


# --------------------------------------------------------------------------------------
# readers


def readers_run(stage: Stage, arguments: argparse.Namespace, cache_size: str) -> dict[str, Any]:
    """One cold mount, ``--threads`` readers for ``--duration`` seconds; its figures."""
    options = [] if cache_size == "default" else ["--cache-size", cache_size]
    if arguments.timeout:
        options += ["--timeout", str(arguments.timeout)]
    stage.proxy.reset()
    stage.proxy.requests.clear()
    mount = stage.mount(f"mnt-readers-{cache_size}", *options)
    recorder = Recorder()
    pid = mount.pid()
    sampler = Sampler(pid, mount.path.with_name(mount.path.name + ".cache"), recorder)
    image = stage.image(mount)
    targets = targets_for(image, stage.oracle, stage.image_dirs)
    deadline = time.monotonic() + arguments.duration
    sampler.start()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            random_read(recorder, targets, rng, not arguments.keep_page_cache)

    threads = [
        threading.Thread(target=reader, args=(arguments.seed + n,), daemon=True)
        for n in range(arguments.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(arguments.duration + 120)
    hung = sum(thread.is_alive() for thread in threads)
    sampler.stop()
    differences = listing_differences(image, stage.oracle, stage.image_dirs)
    figures = readers_figures(stage, recorder, sampler, targets)
    figures |= {
        "cache_size": cache_size,
        "options": options,
        "hung_threads": hung,
        "listing_differences": differences,
        "daemon": daemon_state(pid),
        "answers_stat": answers(mount.path),
        "log": log_summary(mount.log()),
    }
    figures["unmount"] = close_mount(mount)
    return figures


def readers_figures(
    stage: Stage, recorder: Recorder, sampler: Sampler, targets: Targets
) -> dict[str, Any]:
    ops = recorder.ops
    requests = stage.proxy.requests
    blobs = {
        layer["digest"].split(":")[1][:12]: {
            "size_mib": round(layer["size"] / MIB, 2),
            "whole_gets": requests[(layer["digest"], "GET")],
            "range_gets": requests[(layer["digest"], "GET range")],
            "heads": requests[(layer["digest"], "HEAD")],
            "mib_sent": round(stage.proxy.blob_bytes(layer["digest"]) / MIB, 1),
        }
        for layer in stage.manifest["layers"]
    }
    config = stage.manifest["config"]["digest"]
    return {
        "image": describe_image(stage, targets),
        "reads": len(ops),
        "read_mib": round(recorder.bytes_read / MIB, 1),
        "reads_per_second": round(len(ops) / max(1e-9, sampler.samples[-1].second), 1)
        if sampler.samples else 0.0,
        "wrong_bytes": recorder.wrong_bytes,
        "wrong_examples": recorder.wrong_examples,
        "outcomes": dict(Counter(op.outcome for op in ops)),
        "latency": latency_figures(ops),
        "slowest": sorted(((round(op.seconds, 3), op.where) for op in ops), reverse=True)[:3],
        "blob_requests": blobs,
        "config_gets": requests[(config, "GET")],
        "daemon_died_at": sampler.died_at,
        "longest_in_flight_s": round(sampler.longest_in_flight[0], 3),
        "memory": memory_figures(sampler.samples),
    }  # fmt: skip


def readers(arguments: argparse.Namespace) -> dict[str, Any]:
    with staged(arguments) as stage:
        runs = [readers_run(stage, arguments, size) for size in arguments.cache_size]
    for figures in runs:
        print_readers(figures, arguments)
    return {"mode": "readers", "runs": runs}


def print_readers(figures: dict[str, Any], arguments: argparse.Namespace) -> None:
    image, memory = figures["image"], figures["memory"]
    print(f"\n## readers: --cache-size {figures['cache_size']}, {arguments.threads} threads, "
          f"{arguments.duration} s")  # fmt: skip
    print(f"image: layers of {image['layers_compressed_mib']} MiB compressed, "
          f"{image['layers_unpacked_mib']} MiB unpacked; {image['regular_files']} regular "
          f"files ({image['regular_file_mib']} MiB) in layer dirs and rootfs/\n")  # fmt: skip
    rows = [
        ("reads (open + pread + close)", f"{figures['reads']} ({figures['reads_per_second']}/s)"),
        ("MiB read and compared", figures["read_mib"]),
        ("wrong bytes", figures["wrong_bytes"]),
        ("outcomes", figures["outcomes"]),
        ("latency p50 / p99 / max", "{p50_ms} ms / {p99_ms} ms / {max_s} s".format(
            **figures["latency"])),
        ("daemon RSS first / peak / steady (median, last quarter)",
         f"{memory['rss_mib_first']} / {memory['rss_mib_peak']} / "
         f"{memory['rss_mib_steady_median_last_quarter']} MiB"),
        ("daemon open fds first / max / last",
         f"{memory['fds_first']} / {memory['fds_max']} / {memory['fds_last']}"),
        ("cache dir peak / last", f"{memory['cache_dir_mib_peak']} / "
         f"{memory['cache_dir_mib_last']} MiB"),
        ("daemon RSS every 10 s (MiB)", memory["rss_mib_every_10s"]),
        ("cache dir peak in the second half", f"{memory['cache_dir_mib_peak_second_half']} MiB"),
        ("listing differences (names, sizes)", len(figures["listing_differences"])),
        ("hung threads / longest op in flight", f"{figures['hung_threads']} / "
         f"{figures['longest_in_flight_s']} s"),
        ("daemon at the end", f"{figures['daemon']}, answers stat: {figures['answers_stat']}"),
        ("daemon log", f"{figures['log']['lines_by_level']}, "
         f"{figures['log']['tracebacks']} tracebacks"),
    ]  # fmt: skip
    print("| figure | measured |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print("\n| layer blob | size MiB | whole GETs | Range GETs | HEADs | MiB sent |\n"
          "|---|---|---|---|---|---|")  # fmt: skip
    for digest, blob in figures["blob_requests"].items():
        print(f"| {digest} | {blob['size_mib']} | {blob['whole_gets']} | {blob['range_gets']} "
              f"| {blob['heads']} | {blob['mib_sent']} |")  # fmt: skip
    for line in figures["wrong_examples"] + figures["listing_differences"][:10]:
        print(f"- {line}")
    for message, count in figures["log"]["top_messages"]:
        print(f"- log x{count}: {message}")


# --------------------------------------------------------------------------------------
# faults


WHERE = {"blob": "/blobs/", "manifest": "/manifests/", "tag list": "/tags/list"}
FAULTS: dict[str, list[str]] = {
    "503": ["503"],
    "429": ["429"],
    "reset": ["reset"],
    "503x8": ["503"] * 8,
    "stall": ["stall"],
    "trickle": ["trickle"],
    "truncate": ["truncate"],
    "corrupt": ["corrupt"],
}
"""Fault kind → the CountingProxy faults armed for one episode.
``503x8`` outlasts every retry; the others are met once."""


@dataclass
class Episode:
    kind: str
    where: str
    start: float
    end: float = 0.0
    wall_start: float = field(default_factory=time.time)
    """For the daemon's log, whose lines carry wall-clock times."""


def fresh_image(payload: bytes) -> tuple[bytes, bytes, bytes]:
    """A one-layer image whose only file, ``data.bin``, is ``payload``: (layer blob,
    config blob, manifest), so every push brings a blob regfs has never seen."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("data.bin")
        info.size, info.mode, info.mtime = len(payload), 0o644, 1_700_000_000
        archive.addfile(info, io.BytesIO(payload))
    layer = gzip.compress(tar.getvalue(), compresslevel=1, mtime=0)
    architecture = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), "amd64")
    config = json.dumps({
        "architecture": architecture, "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar.getvalue())]},
    }).encode()  # fmt: skip
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(layer), "size": len(layer)}],
    }).encode()  # fmt: skip
    return layer, config, manifest


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_fresh(registry_url: str, tag: str, payload: bytes) -> None:
    """Monolithic uploads and a manifest PUT, straight to the registry (not the proxy)."""
    layer, config, manifest = fresh_image(payload)
    for blob in (layer, config):
        upload_blob(registry_url, FRESH_REPOSITORY, blob)
    images.registry_request(
        f"{registry_url}/v2/{FRESH_REPOSITORY}/manifests/{tag}", method="PUT", data=manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )  # fmt: skip


def whole_file(path: Path, expected: bytes) -> Check:
    got = path.read_bytes()
    wrong, detail = compare(got, expected)
    return len(got), wrong, detail


class FaultRun:
    """The threads of a faults run, and the registry lock the killer and pusher share."""

    def __init__(self, stage: Stage, mount: Mount, arguments: argparse.Namespace) -> None:
        self.stage, self.mount, self.arguments = stage, mount, arguments
        self.recorder = Recorder()
        self.stop = threading.Event()
        self.registry_lock = threading.Lock()
        self.host = mount / stage.proxy.host
        self.targets = targets_for(stage.image(mount), stage.oracle, stage.image_dirs)
        self.manifest_bytes = images.get_manifest(stage.registry.url, REPOSITORY, TAG)[0]
        self.fresh: list[tuple[str, bytes]] = []
        self.episodes: list[Episode] = []

    def reader(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            random_read(self.recorder, self.targets, rng, True)

    def lister(self) -> None:
        """What ``ls -l`` and ``cat manifest`` users do, past a 1 s metadata TTL."""
        record = self.recorder.run
        repository = self.host / REPOSITORY
        fresh = self.host / FRESH_REPOSITORY
        while not self.stop.is_set():
            self.listed("catalog", self.host)
            for name in self.listed("tag list", repository):
                tag_dir = repository / name
                record("tag stat", str(tag_dir), functools.partial(stat, tag_dir))
            record(
                "manifest",
                str(repository / TAG / "manifest"),
                lambda: whole_file(repository / TAG / "manifest", self.manifest_bytes),
            )
            if self.fresh:
                self.listed("tag list", fresh)
                for tag, _ in self.fresh[-3:]:
                    record("tag stat", str(fresh / tag), functools.partial(stat, fresh / tag))
            time.sleep(0.2)

    def listed(self, kind: str, path: Path) -> list[str]:
        """``os.listdir(path)``, recorded; the names, or none if it failed."""
        names: list[str] = []

        def action() -> Check:
            names.extend(os.listdir(path))
            return 0, 0, ""

        self.recorder.run(kind, str(path), action)
        return names

    def pusher(self) -> None:
        """A new image every ``--fresh-interval`` s, read whole through the mount: its first
        download, a manifest by a new digest, a tag new to the tag list. A read that failed
        is tried again after the next push (does it recover?)."""
        rng = random.Random(self.arguments.seed - 1)
        again: list[tuple[str, bytes]] = []
        number = 0
        while not self.stop.wait(self.arguments.fresh_interval):
            number += 1
            tag, payload = f"f{number}", rng.randbytes(rng.randint(64 * KIB, 3 * MIB))
            with self.registry_lock:
                push_fresh(self.stage.registry.url, tag, payload)
            self.fresh.append((tag, payload))
            for old_tag, old_payload in again:
                self.read_fresh("fresh again", old_tag, old_payload)
            again = []
            if self.read_fresh("fresh read", tag, payload) != "ok":
                again.append((tag, payload))

    def read_fresh(self, kind: str, tag: str, payload: bytes) -> str:
        path = self.host / FRESH_REPOSITORY / tag / "0/data.bin"
        return self.recorder.run(kind, str(path), lambda: whole_file(path, payload))

    def inject(self, rng: random.Random, deadline: float) -> None:
        """Episodes until ``deadline``: every (fault, place) pair once per shuffled cycle,
        plus a kill of the registry and three quiet episodes (the control)."""
        proxy, interval = self.stage.proxy, self.arguments.interval
        cycle: list[tuple[str, str]] = []
        chosen = set(self.arguments.faults)
        while time.monotonic() < deadline:
            if not cycle:
                cycle = [(kind, where) for kind in FAULTS for where in WHERE if kind in chosen]
                cycle += [("none", "")] * 3
                cycle += [("kill", "registry")] if self.arguments.kill else []
                rng.shuffle(cycle)
            kind, where = cycle.pop()
            episode = Episode(kind, where, time.monotonic())
            self.episodes.append(episode)
            seconds = min(interval * rng.uniform(0.6, 1.4), deadline - episode.start)
            if kind == "kill":
                self.kill_registry(seconds)
            else:
                if kind != "none":
                    proxy.arm(kind, WHERE[where], FAULTS[kind])
                time.sleep(seconds)
                proxy.disarm()
            episode.end = time.monotonic()

    def kill_registry(self, seconds: float) -> None:
        with self.registry_lock:
            self.stage.registry.kill()
            time.sleep(seconds)
            self.stage.registry.start()


def stat(path: Path) -> Check:
    os.stat(path)
    return 0, 0, ""


def faults(arguments: argparse.Namespace) -> dict[str, Any]:
    with staged(arguments) as stage:
        options = ["--timeout", str(arguments.timeout), "--metadata-ttl",
                   str(arguments.metadata_ttl), "--cache-size", arguments.cache_size]  # fmt: skip
        stage.proxy.stall_seconds = 2 * arguments.timeout + 1
        stage.proxy.trickle_seconds = 3 * arguments.timeout
        mount = stage.mount("mnt-faults", *options)
        figures = fault_run(stage, mount, arguments)
        figures["options"] = options
        figures["unmount"] = close_mount(mount)
    print_faults(figures, arguments)
    return {"mode": "faults"} | figures


def fault_run(stage: Stage, mount: Mount, arguments: argparse.Namespace) -> dict[str, Any]:
    run = FaultRun(stage, mount, arguments)
    pid = mount.pid()
    warm = run.recorder.run(  # every layer indexed before the clock: episodes see steady state
        "warm-up", "rootfs/etc/os-release",
        lambda: whole_file(stage.image(mount) / "rootfs/etc/os-release",
                           (stage.oracle / "bundle/rootfs/etc/os-release").read_bytes()),
    )  # fmt: skip
    sampler = Sampler(pid, mount.path.with_name(mount.path.name + ".cache"), run.recorder)
    sampler.start()
    workers = [threading.Thread(target=run.reader, args=(arguments.seed + n,), daemon=True)
               for n in range(arguments.readers)]  # fmt: skip
    workers += [threading.Thread(target=run.lister, daemon=True),
                threading.Thread(target=run.pusher, daemon=True)]  # fmt: skip
    for worker in workers:
        worker.start()
    run.inject(random.Random(arguments.seed), time.monotonic() + arguments.duration)
    stage.proxy.disarm()
    run.stop.set()
    for worker in workers:
        worker.join(3 * arguments.timeout + 30)
    hung = [w.name for w in workers if w.is_alive()]
    time.sleep(stage.proxy.stall_seconds)  # stalled handlers finish; then: does all work?
    before = len(run.recorder.ops)
    rng = random.Random(arguments.seed + 99)
    for _ in range(20):
        random_read(run.recorder, run.targets, rng, True)
    push_fresh(stage.registry.url, "after", b"after the faults\n")
    run.read_fresh("fresh read", "after", b"after the faults\n")
    after = Counter(op.outcome for op in run.recorder.ops[before:])
    sampler.stop()
    return fault_figures(run, sampler) | {
        "warm_up": warm,
        "hung_workers": hung,
        "after_faults": dict(after),
        "daemon": daemon_state(pid),
        "answers_stat": answers(mount.path),
        "log": log_summary(mount.log()),
        "log_by_fault": {
            name: messages.most_common(6)
            for name, messages in sorted(log_by_fault(run, mount.log()).items())
        },
    }


def unexplained_failures(run: FaultRun) -> list[str]:
    """Failed operations that no fault can explain: no fault met a request from
    ``--timeout`` + 3 s before the operation to its end (a re-fetch that met a fault fails
    up to ``--timeout`` later, and is remembered 2 s), and no registry kill was under way
    then. Any would be a bug of regfs (or of this script); each is shown with the last
    fault met before it."""
    hits = sorted(run.stage.proxy.hits)
    times = [hit[0] for hit in hits]
    window = run.arguments.timeout + 3
    kills = [(e.start, e.end + window) for e in run.episodes if e.kind == "kill"]
    offset = time.time() - time.monotonic()
    found = []
    for op in run.recorder.ops:
        if op.outcome == "ok" or op.kind == "warm-up":
            continue
        end = op.start + op.seconds
        first = bisect.bisect_left(times, op.start - window)
        if first < len(times) and times[first] <= end:
            continue
        if any(start <= end and op.start <= stop for start, stop in kills):
            continue
        last = bisect.bisect_right(times, op.start) - 1
        before = "no fault before"
        if last >= 0:
            when, kind, fault, request = hits[last]
            before = f"last fault {kind} {fault} {op.start - when:.1f} s before, on {request}"
        wall = time.strftime("%H:%M:%S", time.localtime(op.start + offset))
        found.append(f"{wall} {op.kind} {op.where}: {op.outcome} after {op.seconds:.2f} s "
                     f"({before})")  # fmt: skip
    return found


LOG_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \d+ (WARNING|ERROR|CRITICAL) (.*)")


def log_by_fault(run: FaultRun, text: str) -> dict[str, Counter[str]]:
    """The daemon's warnings, by the fault of the episode they were logged in."""
    starts = [episode.wall_start for episode in run.episodes]
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        when = time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S")) + int(match[2]) / 1000
        index = bisect.bisect_right(starts, when) - 1
        name = "before" if index < 0 else f"{run.episodes[index].kind} {run.episodes[index].where}"
        folded = re.sub(r"[0-9a-f]{12,}", "<hex>", match[4])
        found[name.strip()][re.sub(r"\d+(\.\d+)?", "N", folded)[:150]] += 1
    return found


def fault_figures(run: FaultRun, sampler: Sampler) -> dict[str, Any]:
    """Every operation attributed to the episode it started in, grouped by fault."""
    episodes = run.episodes
    starts = [episode.start for episode in episodes]
    timeout = run.arguments.timeout
    by_fault: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"episodes": 0, "met": 0, "ops": Counter(), "outcomes": Counter(),
                 "max_s": 0.0, "slowest": "", "over_timeout": 0}
    )  # fmt: skip
    for episode in episodes:
        row = by_fault[f"{episode.kind} {episode.where}".strip()]
        row["episodes"] += 1
        row["met"] += sum(
            1 for when, kind, _, _ in run.stage.proxy.hits
            if kind == episode.kind and episode.start <= when < (episode.end or when + 1)
        )  # fmt: skip
    for op in run.recorder.ops:
        index = bisect.bisect_right(starts, op.start) - 1
        if index < 0 or op.kind == "warm-up":
            continue
        episode = episodes[index]
        row = by_fault[f"{episode.kind} {episode.where}".strip()]
        row["ops"][op.kind] += 1
        row["outcomes"][op.outcome if op.outcome == "ok" else f"{op.kind}: {op.outcome}"] += 1
        if op.seconds > row["max_s"]:
            row["max_s"], row["slowest"] = op.seconds, f"{op.kind} → {op.outcome}"
        row["over_timeout"] += op.seconds > timeout + 2
    ops = run.recorder.ops
    return {
        "episodes": len(episodes),
        "episode_log": [
            (
                time.strftime("%H:%M:%S", time.localtime(e.wall_start)),
                e.kind,
                e.where,
                round(e.end - e.start, 1),
            )
            for e in episodes
        ],
        "by_fault": {
            name: row
            | {
                "ops": dict(row["ops"]),
                "outcomes": dict(row["outcomes"]),
                "max_s": round(row["max_s"], 3),
            }
            for name, row in sorted(by_fault.items())
        },
        "ops": len(ops),
        "outcomes": dict(Counter(op.outcome for op in ops)),
        "latency_by_kind": {
            kind: latency_figures([op for op in ops if op.kind == kind])
            for kind in sorted({op.kind for op in ops})
        },
        "over_timeout": sum(op.seconds > timeout + 2 for op in ops),
        "unexplained_failures": unexplained_failures(run),
        "over_timeout_examples": [
            f"{op.kind} {op.where}: {op.seconds:.2f} s → {op.outcome}"
            for op in sorted(ops, key=lambda op: -op.seconds)[:8]
            if op.seconds > timeout + 2
        ],
        "read_mib": round(run.recorder.bytes_read / MIB, 1),
        "wrong_bytes": run.recorder.wrong_bytes,
        "wrong_examples": run.recorder.wrong_examples,
        "fresh_images": len(run.fresh),
        "daemon_died_at": sampler.died_at,
        "longest_in_flight_s": round(sampler.longest_in_flight[0], 3),
        "longest_in_flight": sampler.longest_in_flight[1],
        "memory": memory_figures(sampler.samples),
        "requests": {
            f"{what[:19]} {method}": n
            for (what, method), n in run.stage.proxy.requests.most_common(12)
        },
    }


def print_faults(figures: dict[str, Any], arguments: argparse.Namespace) -> None:
    memory = figures["memory"]
    print(f"\n## faults: {arguments.duration} s, {figures['episodes']} episodes, "
          f"options {' '.join(figures['options'])}\n")  # fmt: skip
    print("| fault, where | episodes | met | operations | ok | not ok (what callers saw) "
          "| max s |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for name, row in figures["by_fault"].items():
        failed = {k: v for k, v in row["outcomes"].items() if k != "ok"}
        shown = ", ".join(f"{k} x{v}" for k, v in sorted(failed.items())) or "—"
        print(
            f"| {name} | {row['episodes']} | {row['met']} | {sum(row['ops'].values())} | "
            f"{row['outcomes'].get('ok', 0)} | {shown} | {row['max_s']} ({row['slowest']}) |"
        )
    rows = [
        ("operations", f"{figures['ops']}: {figures['outcomes']}"),
        ("MiB read and compared", figures["read_mib"]),
        ("wrong bytes", figures["wrong_bytes"]),
        (f"operations over --timeout + 2 s ({arguments.timeout + 2} s)",
         figures["over_timeout"]),
        ("failures no fault explains", len(figures["unexplained_failures"])),
        ("longest op in flight (sampled)", f"{figures['longest_in_flight_s']} s "
         f"({figures['longest_in_flight']})"),
        ("fresh images pushed and read", figures["fresh_images"]),
        ("RSS min / max MiB", f"{memory['rss_mib_min']} / {memory['rss_mib_peak']}"),
        ("RSS mean, first minute / last minute MiB", f"{memory['rss_mib_first_minute_mean']} / "
         f"{memory['rss_mib_last_minute_mean']}"),
        ("RSS per minute MiB", memory["rss_mib_per_minute"]),
        ("open fds first / max / last", f"{memory['fds_first']} / {memory['fds_max']} / "
         f"{memory['fds_last']}"),
        ("open fds per minute (max)", memory["fds_per_minute_max"]),
        ("cache dir peak / last MiB", f"{memory['cache_dir_mib_peak']} / "
         f"{memory['cache_dir_mib_last']}"),
        ("after the faults (20 reads, a new image)", figures["after_faults"]),
        ("hung workers", figures["hung_workers"]),
        ("daemon at the end", f"{figures['daemon']}, answers stat: {figures['answers_stat']}, "
         f"{figures['unmount']}"),
        ("daemon log", f"{figures['log']['lines_by_level']}, "
         f"{figures['log']['tracebacks']} tracebacks"),
    ]  # fmt: skip
    print("\n| figure | measured |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print("\n| operation | p50 ms | p99 ms | max s |\n|---|---|---|---|")
    for kind, latency in figures["latency_by_kind"].items():
        print(f"| {kind} | {latency['p50_ms']} | {latency['p99_ms']} | {latency['max_s']} |")
    examples = figures["over_timeout_examples"] + figures["wrong_examples"]
    for line in examples + figures["unexplained_failures"][:20]:
        print(f"- {line}")
    print("\ndaemon log warnings by the fault of their episode:")
    for name, messages in figures["log_by_fault"].items():
        for message, count in messages[:4]:
            print(f"- {name}: x{count} {message}")
    for message, count in figures["log"]["top_messages"]:
        print(f"- log x{count}: {message}")


# --------------------------------------------------------------------------------------


def arguments_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workdir", type=Path, default=None,
                        help="kept across runs: the Debian rootfs, image and oracle are reused "
                        "(default: a temporary dir, removed)")  # fmt: skip
    common.add_argument(
        "--venv",
        action="store_true",
        help="run the regfs beside this interpreter, not a freshly built wheel",
    )
    common.add_argument(
        "--big-file-mib", type=int, default=64, help="size of the image's random file (default: 64)"
    )
    common.add_argument("--json", type=Path, help="write the figures here too")
    common.add_argument("--seed", type=int, default=1)
    modes = parser.add_subparsers(dest="mode", required=True)
    readers_mode = modes.add_parser("readers", parents=[common], help="concurrent checked reads")
    readers_mode.add_argument("--duration", type=float, default=60)
    readers_mode.add_argument("--threads", type=int, default=16)
    readers_mode.add_argument("--cache-size", action="append",
                              help="one run per value, in one staging; 'default' passes none "
                              "(default: default)")  # fmt: skip
    readers_mode.add_argument("--timeout", type=int, help="regfs --timeout (default: regfs's)")
    readers_mode.add_argument(
        "--keep-page-cache",
        action="store_true",
        help="do not drop each file's page cache after a read",
    )
    faults_mode = modes.add_parser("faults", parents=[common], help="reads under injected faults")
    faults_mode.add_argument("--duration", type=float, default=600)
    faults_mode.add_argument("--readers", type=int, default=4)
    faults_mode.add_argument(
        "--interval", type=float, default=6, help="mean seconds per fault episode (default: 6)"
    )
    faults_mode.add_argument("--timeout", type=int, default=5, help="regfs --timeout (5)")
    faults_mode.add_argument("--metadata-ttl", type=float, default=1)
    faults_mode.add_argument(
        "--cache-size", default="64M", help="regfs --cache-size: small, so chunks are fetched again"
    )
    faults_mode.add_argument(
        "--fresh-interval",
        type=float,
        default=4,
        help="seconds between pushes of a fresh image (default: 4)",
    )
    faults_mode.add_argument(
        "--faults",
        type=lambda text: text.split(","),
        default=list(FAULTS),
        help=f"comma-separated fault kinds to inject (default: {','.join(FAULTS)}); "
        "'none' for quiet episodes only",
    )
    faults_mode.add_argument(
        "--kill",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also kill and restart the registry, once per cycle",
    )
    return parser


def verdict(summary: dict[str, Any]) -> list[str]:
    """What must never happen, found in the figures."""
    problems = []
    for figures in summary.get("runs", [summary]):
        failed = sum(n for outcome, n in figures["outcomes"].items() if outcome != "ok")
        if summary["mode"] == "readers" and failed:
            problems.append(f"{failed} failed reads without any fault")
        if figures["wrong_bytes"]:
            problems.append(f"{figures['wrong_bytes']} wrong bytes")
        if figures["daemon"] != "alive" or figures["daemon_died_at"] is not None:
            problems.append("the daemon died")
        if (
            not figures["answers_stat"]
            or figures.get("hung_threads")
            or figures.get("hung_workers")
        ):
            problems.append("a hang")
        if figures["log"]["tracebacks"]:
            problems.append(f"{figures['log']['tracebacks']} tracebacks in the daemon log")
    return problems


def main() -> int:
    arguments = arguments_parser().parse_args()
    if arguments.mode == "readers" and not arguments.cache_size:
        arguments.cache_size = ["default"]
    with contextlib.ExitStack() as stack:
        if arguments.workdir is None:
            temporary = stack.enter_context(tempfile.TemporaryDirectory(prefix="regfs-soak-"))
            arguments.workdir = Path(temporary)
        started = time.strftime("%Y-%m-%d %H:%M:%S %z")
        measured = source_state()  # now, as the wheel is built: the tree may change meanwhile
        summary = readers(arguments) if arguments.mode == "readers" else faults(arguments)
    summary |= {"started": started, "machine": machine(), "regfs": measured,
                "command": " ".join(sys.argv), "hostname": socket.gethostname()}  # fmt: skip
    problems = verdict(summary)
    summary["problems"] = problems
    print(f"\n{started}, {summary['machine']}, regfs {summary['regfs']}")
    clean = "no wrong byte, death, hang or traceback"
    print("verdict:", "; ".join(problems) if problems else clean)
    if arguments.json:
        arguments.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
