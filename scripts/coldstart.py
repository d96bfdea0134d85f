"""Issue 21: an application's cold start through regfs, against pulling the image first.

The image: ``mmdebstrap --variant=minbase --include=python3`` (bookworm, real packages) in
one layer, packed by umoci, pushed as gzip, eStargz (converted by ctr-remote with the files
a start reads recorded first, as ``ctr-remote --estargz-record-in`` takes them), zstd:chunked
(ctr-remote ``--zstdchunked``: skopeo 1.9.3 hung for 10 minutes compressing this image) and
gzip with a SOCI index (``regfs index push``); the last two also with the same record
pushed as a start record (``regfs index push-start``). For each network profile, each
format: a fresh regfs cache, the page cache dropped, mount, then ``chroot rootfs python3 -c
'import json, sqlite3, email'`` (the start), then a second command that imports more (in the
same mount). Against: ``skopeo copy`` + ``umoci unpack`` of the gzip image + the same two
commands. Time, blob bytes and round trips (requests, Range requests) are counted by the
proxy that is the network. Used by scripts/bench.py (``coldstart``).
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import plots

from tests.support import images
from tests.support.estargz import push_estargz
from tests.support.mount import Installation, Mount
from tests.support.netprofiles import NetworkProfile
from tests.support.podman import Podman
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry

START = ("python3", "-c", "import json, sqlite3, email")
MORE = ("python3", "-c", "import asyncio, http.server, unittest, decimal, logging.handlers, "
        "xml.etree.ElementTree, zipfile, tarfile, csv, urllib.request; import sqlite3; "
        "sqlite3.connect(':memory:').execute('select 1')")  # fmt: skip
"""The second command: more of the standard library, in the same mount after the start."""
FORMATS = ("gzip", "estargz", "zstd-chunked", "zstd-chunked-record", "soci", "soci-record",
           "soci-4m-record")  # fmt: skip
"""``-record``: the same image given a start record (``regfs index push-start``) too."""
SPAN_SIZES = {"soci-4m-record": "4M"}
"""``regfs index push --span-size`` where not its default (2 MiB): soci's default."""
PULL_ALL = "pull all (skopeo + umoci)"
PODMAN_PULL = "podman pull + run"
TRACED = "open,openat,execve,stat,newfstatat,chroot"
OPENED = re.compile(r'^\d+ +\w+\((?:AT_FDCWD, )?"(/[^"]+)".* = \d+')
"""A path the traced command opened, executed or statted, with success."""


@dataclass(frozen=True)
class Result:
    """One cold start: seconds for the start and for the second command, blob bytes and
    requests (all, and those with a Range) after each."""

    start: float
    more: float
    bytes_start: int
    bytes_total: int
    requests_start: int
    ranges_start: int
    requests_total: int
    ranges_total: int


def run(*command: str | Path) -> None:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed: {result.stderr.strip()}")


def drop_page_cache() -> None:
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def build(workdir: Path) -> tuple[Path, Path]:
    """The python3 image as an OCI layout (tag ``1``), and the paths its start reads."""
    rootfs = workdir / "rootfs"
    run("mmdebstrap", "--quiet", "--variant=minbase", "--include=python3", "--mode=root",
        "bookworm", rootfs)  # fmt: skip
    layout = workdir / "oci"
    image = f"{layout}:1"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", image)
    run("umoci", "config", "--image", image, "--architecture", "amd64", "--os", "linux")
    run("umoci", "insert", "--image", image, rootfs, "/")
    return layout, record_start(rootfs, workdir / "record.json")


def record_start(rootfs: Path, record: Path) -> Path:
    """What ``ctr-remote optimize --record-out`` writes (one ``{"path": …}`` per line, in
    the order first read), made with strace: the files the start opens, stats or executes,
    links followed to their targets, that are regular files or links in the image."""
    trace = record.with_suffix(".strace")
    run("strace", "-f", "-qq", "-o", trace, "-e", f"trace={TRACED}", "chroot", rootfs, *START)
    seen: dict[str, None] = {}
    lines = trace.read_text().splitlines()
    inside = next(n for n, line in enumerate(lines) if " chroot(" in line)  # chroot(8)'s own
    for line in lines[inside:]:  # files before it are the host's
        match = OPENED.match(line)
        if match and match[1].startswith("/"):
            paths = _with_link_targets(rootfs, match[1])
            if " execve(" in line and paths:  # the kernel opens its loader unseen by strace
                loader = _interpreter(rootfs / paths[-1])
                paths += _with_link_targets(rootfs, loader) if loader else []
            for path in paths:
                seen.setdefault(path)
    record.write_text("".join(json.dumps({"path": path}) + "\n" for path in seen))
    return record


def _with_link_targets(rootfs: Path, path: str) -> list[str]:
    """``path`` (relative to the image root) and, where it is a symlink, what it leads to
    inside the image; only entries that exist there, directories left out. Each is named
    as the layer's tar names it: ``lib/x86_64-linux-gnu/libc.so.6`` of a merged-``/usr``
    image is ``usr/lib/x86_64-linux-gnu/libc.so.6``, as ctr-remote's own record has it."""
    found = []
    for _ in range(8):  # bounded: a link loop ends here
        path = _through_directory_links(rootfs, path)
        entry = rootfs / path
        if not entry.is_symlink() and not entry.is_file():
            break
        found.append(path)
        if not entry.is_symlink():
            break
        target = entry.readlink()
        path = str(target) if target.is_absolute() else str(Path(path).parent / target)
    return found


def _through_directory_links(rootfs: Path, path: str) -> str:
    """``path`` with each directory on its way that is a symlink replaced by its target,
    as the kernel resolves it inside a chroot to ``rootfs``; the last name is kept."""
    ahead = [part for part in path.split("/") if part not in ("", ".")]
    walked: list[str] = []
    for _ in range(40):  # bounded as the kernel's MAXSYMLINKS
        if len(ahead) <= 1:
            break
        part = ahead.pop(0)
        if part == "..":
            walked = walked[:-1]
            continue
        entry = rootfs.joinpath(*walked, part)
        if not entry.is_symlink():
            walked.append(part)
            continue
        target = str(entry.readlink())
        walked = [] if target.startswith("/") else walked
        ahead = [p for p in target.split("/") if p not in ("", ".")] + ahead
    return "/".join(walked + ahead)


def _interpreter(program: Path) -> str | None:
    """The loader a 64-bit little-endian ELF program names (its ``PT_INTERP``), if any."""
    with open(program, "rb") as elf:
        head = elf.read(64)
        if head[:6] != b"\x7fELF\x02\x01":
            return None
        (table,) = struct.unpack_from("<Q", head, 0x20)
        entry_size, count = struct.unpack_from("<HH", head, 0x36)
        elf.seek(table)
        headers = elf.read(entry_size * count)
        for start in range(0, entry_size * count, entry_size):
            kind, _, offset, _, _, size = struct.unpack_from("<IIQQQQ", headers, start)
            if kind == 3:  # PT_INTERP
                elf.seek(offset)
                return elf.read(size).rstrip(b"\0").decode()
    return None


def push_formats(
    layout: Path, registries: dict[str, Registry], record: Path, workdir: Path
) -> dict[str, int]:
    """Each format at ``bench/<format>:1`` of its registry; the layer's size for each."""
    sizes = {}
    for name in FORMATS:
        # A registry each: skopeo would reuse a blob of the same diff ID pushed in another
        # compression, and the image would not be what its name says.
        registry = registries[name] = Registry(workdir / f"registry-{name}")
        destination = f"{registry.host}/bench/{name}:1"
        if name == "estargz":
            push_estargz(layout, "1", destination, workdir / "estargz",
                         "--estargz-record-in", str(record))  # fmt: skip
        elif name == "zstd-chunked":  # skopeo 1.9.3 hung compressing this image so
            push_estargz(layout, "1", destination, workdir / "zstd", "--zstdchunked")
        elif name == "zstd-chunked-record":  # the same blobs
            run("skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                f"docker://{registries['zstd-chunked'].host}/bench/zstd-chunked:1",
                f"docker://{destination}")  # fmt: skip
        else:
            images.push(layout, "1", destination)
        if name.startswith("soci"):  # the same gzip image, given a SOCI index by regfs
            spans = ("--span-size", SPAN_SIZES[name]) if name in SPAN_SIZES else ()
            run(Installation.regfs(), "index", "push", *spans, destination)
        if name.endswith("-record"):
            run(Installation.regfs(), "index", "push-start", destination, record)
        body, _, _ = images.get_manifest(registry.url, f"bench/{name}", "1")
        (layer,) = json.loads(body)["layers"]
        sizes[name] = layer["size"]
    return sizes


def chroot(rootfs: Path, command: tuple[str, ...]) -> float:
    start = time.perf_counter()
    run("chroot", rootfs, *command)
    return time.perf_counter() - start


def _mount_options(name: str) -> tuple[str, ...]:
    """What a mount of format ``name`` needs: the SOCI index regfs pushes is a v1 one."""
    return ("--soci-v1-referrers",) if name.startswith("soci") else ()


def through_regfs(name: str, proxy: CountingProxy, workdir: Path) -> Result | str:
    """The cold start through a fresh mount, or why it failed."""
    drop_page_cache()
    proxy.reset()
    start = time.perf_counter()
    mount = Mount(workdir / f"mnt-{name}", *_mount_options(name))
    try:
        rootfs = mount / proxy.host / f"bench/{name}/1/rootfs"
        try:
            run("chroot", rootfs, *START)
        except RuntimeError as error:
            return str(error).rsplit(": ", 1)[-1]  # what chroot said (EIO: see the log)
        started = time.perf_counter() - start
        after_start = (proxy.blob_bytes(), sum(proxy.requests_by_path.values()),
                       proxy.range_requests)  # fmt: skip
        more = chroot(rootfs, MORE)
    finally:
        mount.close()
    requests = sum(proxy.requests_by_path.values())
    return Result(started, more, after_start[0], proxy.blob_bytes(), after_start[1],
                  after_start[2], requests, proxy.range_requests)  # fmt: skip


def pull_all(proxy: CountingProxy, workdir: Path) -> Result:
    """``skopeo copy`` + ``umoci unpack`` of the gzip image, then the same commands."""
    local = workdir / "pulled"
    local.mkdir(parents=True)
    drop_page_cache()
    proxy.reset()
    start = time.perf_counter()
    run("skopeo", "copy", "--quiet", "--src-tls-verify=false",
        f"docker://{proxy.host}/bench/gzip:1", f"oci:{local}/oci:1")  # fmt: skip
    run("umoci", "unpack", "--image", f"{local}/oci:1", local / "bundle")
    run("chroot", local / "bundle/rootfs", *START)
    started = time.perf_counter() - start
    requests = sum(proxy.requests_by_path.values())
    more = chroot(local / "bundle/rootfs", MORE)
    run("rm", "-rf", local)
    return Result(started, more, proxy.blob_bytes(), proxy.blob_bytes(), requests,
                  proxy.range_requests, requests, proxy.range_requests)  # fmt: skip


def through_the_store(name: str, proxy: CountingProxy, workdir: Path) -> Result | str:
    """The start in a container of fresh podman storage, its layers from a layer store
    mounted (with a fresh cache) before the clock; or why it failed."""
    store = Mount(workdir / f"store-{name}", "--layer-store", "--cache-dir",
                  str(workdir / f"store-cache-{name}"), *_mount_options(name))  # fmt: skip
    try:
        podman = Podman(workdir / f"lazy-{name}", store.path, [proxy.host])
        try:
            result = _in_a_container(podman, f"{proxy.host}/bench/{name}:1", proxy)
            if isinstance(result, Result) and podman.store_layers() != 1:
                return "podman pulled the layer itself"
            return result
        finally:
            podman.close()
    finally:
        store.close()


def podman_pull_and_run(proxy: CountingProxy, workdir: Path) -> Result | str:
    """``podman pull`` of the gzip image, then the start in a container of it."""
    podman = Podman(workdir / "pulled", None, [proxy.host])
    reference = f"{proxy.host}/bench/gzip:1"
    try:
        return _in_a_container(podman, reference, proxy, pull=True)
    finally:
        podman.close()


def _in_a_container(
    podman: Podman, reference: str, proxy: CountingProxy, *, pull: bool = False
) -> Result | str:
    drop_page_cache()
    proxy.reset()
    start = time.perf_counter()
    if pull:
        podman("pull", "--quiet", reference)
    ran = podman.run(reference, *START)
    seconds = time.perf_counter() - start
    if ran.returncode != 0:
        return ran.stderr.strip().splitlines()[-1] if ran.stderr.strip() else "failed"
    requests = sum(proxy.requests_by_path.values())
    blob_bytes = proxy.blob_bytes()
    return Result(seconds, 0.0, blob_bytes, blob_bytes, requests, proxy.range_requests,
                  requests, proxy.range_requests)  # fmt: skip


def coldstart(workdir: Path, profiles: list[NetworkProfile]) -> None:
    layout, record = build(workdir)
    registries: dict[str, Registry] = {}
    try:
        sizes = push_formats(layout, registries, record, workdir)
        for profile in profiles:
            where = workdir / profile.name
            report(profile, _each(registries, profile, (*FORMATS, PULL_ALL), where, _chrooted),
                   sizes)  # fmt: skip
            in_containers = _each(registries, profile, (*FORMATS, PODMAN_PULL), where, _podman)
            report_containers(profile, in_containers, sizes)
    finally:
        for registry in registries.values():
            registry.stop()


def _each(
    registries: dict[str, Registry], profile: NetworkProfile, names: tuple[str, ...],
    where: Path, measure: Callable[[str, CountingProxy, Path], Result | str],
) -> dict[str, Result | str]:  # fmt: skip
    """``measure(name, proxy, where)`` for each name, through a proxy of the profile in
    front of the name's registry (the gzip one for the baselines)."""
    results: dict[str, Result | str] = {}
    for name in names:
        source = registries.get(name, registries["gzip"])
        proxy = CountingProxy(source.port, profile=profile)
        try:
            results[name] = measure(name, proxy, where)
        finally:
            proxy.stop()
    return results


def _chrooted(name: str, proxy: CountingProxy, where: Path) -> Result | str:
    return pull_all(proxy, where) if name == PULL_ALL else through_regfs(name, proxy, where)


def _podman(name: str, proxy: CountingProxy, where: Path) -> Result | str:
    if name == PODMAN_PULL:
        return podman_pull_and_run(proxy, where)
    return through_the_store(name, proxy, where)


def report(
    profile: NetworkProfile, results: dict[str, Result | str], sizes: dict[str, int]
) -> None:
    baseline = results[PULL_ALL]
    assert isinstance(baseline, Result), baseline
    print(f"\ncold start of `chroot rootfs {' '.join(START[:2])} '{START[2]}'` "
          f"({profile.describe()}); gzip layer {sizes['gzip'] / 1e6:.1f} MB")  # fmt: skip
    print(
        "| format | start | / pull all | blob MB | / layer | requests (Range) "
        "| then more | blob MB | requests (Range) |\n|---|---|---|---|---|---|---|---|---|"
    )
    for name, result in results.items():
        if isinstance(result, str):
            print(f"| {name} | failed: {result} | | | | | | | |")
            continue
        layer = sizes.get(name, sizes["gzip"])
        print(f"| {name} | {result.start:.2f} s | {result.start / baseline.start:.2f} | "
              f"{result.bytes_start / 1e6:.1f} | {result.bytes_start / layer:.3f} | "
              f"{result.requests_start} ({result.ranges_start}) | {result.more:.2f} s | "
              f"{result.bytes_total / 1e6:.1f} | {result.requests_total} "
              f"({result.ranges_total}) |")  # fmt: skip
    shown = {n: r for n, r in results.items() if isinstance(r, Result) and n != PULL_ALL}
    plots.bars(
        f"coldstart-{profile.name}",
        f"python3 cold start, {profile.describe()} (lower is better)",
        list(shown),
        {"regfs: mount + start": [r.start for r in shown.values()],
         "skopeo copy + umoci unpack + start": [baseline.start] * len(shown)},
        unit="seconds",
    )  # fmt: skip
    plots.bars(
        f"coldstart-bytes-{profile.name}",
        f"Blob bytes fetched for the start, {profile.describe()}",
        list(shown),
        {"regfs": [r.bytes_start / 1e6 for r in shown.values()],
         "skopeo copy (the whole gzip layer)": [baseline.bytes_start / 1e6] * len(shown)},
        unit="MB",
    )  # fmt: skip


def report_containers(
    profile: NetworkProfile, results: dict[str, Result | str], sizes: dict[str, int]
) -> None:
    baseline = results[PODMAN_PULL]
    print(f"\ncold `podman run --rm IMAGE {' '.join(START[:2])} '{START[2]}'` with fresh "
          f"podman storage ({profile.describe()}): through the regfs layer store, against "
          f"{PODMAN_PULL} of the gzip image")  # fmt: skip
    print("| format | start | / podman pull + run | blob MB | / layer | requests (Range) |\n"
          "|---|---|---|---|---|---|")  # fmt: skip
    for name, result in results.items():
        if isinstance(result, str):
            print(f"| {name} | failed: {result} | | | | |")
            continue
        ratio = f"{result.start / baseline.start:.2f}" if isinstance(baseline, Result) else "-"
        layer = sizes.get(name, sizes["gzip"])
        print(f"| {name} | {result.start:.2f} s | {ratio} | {result.bytes_start / 1e6:.1f} | "
              f"{result.bytes_start / layer:.3f} | {result.requests_start} "
              f"({result.ranges_start}) |")  # fmt: skip
    shown = {n: r for n, r in results.items() if isinstance(r, Result) and n != PODMAN_PULL}
    if isinstance(baseline, Result):
        plots.bars(
            f"coldstart-podman-{profile.name}",
            f"python3 cold start in podman, {profile.describe()} (lower is better)",
            list(shown),
            {"through the regfs layer store": [r.start for r in shown.values()],
             PODMAN_PULL: [baseline.start] * len(shown)},
            unit="seconds",
        )  # fmt: skip
