"""``regfs status``: what a running mount says of itself (its root's ``user.regfs.status``
JSON); and that state and a cache dir's (``regfs cache stats``) as text for people.

Application layer; everything but ``run`` is pure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from regfs.commands.mount_state import mount_state

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_size(size: float) -> str:
    """``1.5 GiB``, ``12 B``: binary units, as ``--cache-size`` takes them."""
    for unit in _UNITS:
        if size < 1024 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable: the last unit returns")


def format_status(state: dict[str, Any]) -> str:
    options, cache = state["options"], state["cache"]
    reads = cache["chunk_reads"]
    served = reads["memory"] + reads["disk"] + reads["fetched"]
    hit_rate = _hit_rate(reads)
    lines = [
        f"mount       {state['mountpoint']} (regfs {state['version']}, pid {state['pid']})",
        f"options     platform {options['platform']}, timeout {options['timeout']:g}s, "
        f"metadata TTL {options['metadata_ttl']:g}s"
        + (", allow_other" if options["allow_other"] else "")
        + (", SOCI v1 referrers" if options.get("soci_v1_referrers") else "")
        + _stale_option(options)
        + (f", reads recorded to {record}" if (record := options.get("record_reads")) else ""),
        f"kernel      caching {options['kernel_caching']}",
        f"cache       {cache['dir']}: {human_size(cache['size'])} of "
        f"{human_size(cache['size_limit'])}",
        f"chunks      {served} read: {reads['memory']} from memory, {reads['disk']} from disk, "
        f"{reads['fetched']} fetched (hit rate {hit_rate})",
        f"in flight   {state['requests_in_flight']} requests",
    ]
    registries = state["registries"]
    lines.append(f"registries  {len(registries)} contacted" + (":" if registries else ""))
    for host, stats in registries.items():
        line = f"  {host}: {stats['requests']} requests"
        if stats["last_error"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stats["last_error_at"]))
            line += f"; last error at {when}: {stats['last_error']}"
        lines.append(line)
    lines += _offline_lines(state)
    store = state.get("layer_store")
    if store is not None:
        in_use = store["layers_in_use"]
        lines.append(f"layer store {len(in_use)} layers in use" + (":" if in_use else ""))
        lines += [f"  {layer['reference']} {layer['layer']} ({layer['uses']} uses)"
                  for layer in in_use]  # fmt: skip
    return "\n".join(lines) + "\n"


def _stale_option(options: dict[str, Any]) -> str:
    """``--no-stale`` or ``--max-stale``, where given: they change what an outage shows."""
    if not options["stale"]:
        return ", no stale answers"
    if options["max_stale"] is not None:
        return f", stale answers up to {options['max_stale']:g}s old"
    return ""


def _offline_lines(state: dict[str, Any]) -> list[str]:
    """The registries found down (the cache answers for them) and the stale answers shown
    (what ``user.regfs.stale`` marks, counted for the whole mount); nothing while none."""
    lines = []
    unreachable, stale = state["unreachable"], state["stale_answers"]
    if unreachable:
        lines.append(f"unreachable {len(unreachable)} host{'s' * (len(unreachable) != 1)}:")
        lines += [f"  {host}: {why}" for host, why in sorted(unreachable.items())]
    if stale["now"] or stale["served"]:
        lines.append(f"stale       {stale['now']} last answers shown in place of the "
                     f"registry's, served {stale['served']} times")  # fmt: skip
    return lines


def _hit_rate(reads: dict[str, int]) -> str:
    served = reads["memory"] + reads["disk"] + reads["fetched"]
    if not served:
        return "n/a"
    return f"{100 * (reads['memory'] + reads['disk']) / served:.1f}%"


def _image_name(image: dict[str, Any]) -> str:
    """``host/repository@digest``, and its tags: an image a layer was used for."""
    name = f"{image['host']}/{image['repository']}@{image['digest']}"
    return f"{name} (tags: {', '.join(image['tags'])})" if image["tags"] else name


def _pin_gaps(pin: dict[str, Any]) -> str:
    """What a pin names that the cache lacks (read or fetched later, it stays)."""
    gaps = [f"{pin['pieces_missing']} pieces"] if pin["pieces_missing"] else []
    gaps += [f"{pin['layers_not_indexed']} layers"] if pin["layers_not_indexed"] else []
    return f" ({' and '.join(gaps)} not cached)" if gaps else ""


def format_cache_stats(stats: dict[str, Any]) -> str:
    sizes = stats["sizes"]
    lines = [f"cache dir   {stats['dir']}"]
    lines += [f"{kind:<11} {human_size(size)}" for kind, size in sizes.items()]
    lines.append(f"{'total':<11} {human_size(sum(sizes.values()))}")
    lines.append(f"layers      {len(stats['layers'])} indexed")
    for layer in stats["layers"]:
        lines.append(f"  {layer['digest']}  {layer['access']:<12} {100 * layer['cached']:5.1f}%"
                     " cached")  # fmt: skip
        lines += [f"      used by {_image_name(image)}" for image in layer["images"]]
    count = len(stats["pins"])
    lines.append(f"pinned      {count} image{'s' * (count != 1)}, holding "
                 f"{human_size(stats['pinned'])}")  # fmt: skip
    lines += [f"  {each['reference']}  {each['image']}  {human_size(each['bytes'])}"
              f"{_pin_gaps(each)}" for each in stats["pins"]]  # fmt: skip
    if "image" in stats:
        image = stats["image"]
        lines.append(f"image       {100 * image['cached']:.1f}% of its {image['layers']} layers "
                     "cached")  # fmt: skip
    for mount in stats["mounts"]:
        reads = mount["chunk_reads"]
        lines.append(f"mount       {mount['mountpoint']}: hit rate {_hit_rate(reads)}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """Print what a running mount says of itself (its root's ``user.regfs.status``)."""
    try:
        raw = mount_state(args.mountpoint)
    except OSError as error:
        print(f"regfs: {args.mountpoint}: no regfs mount answers ({error.strerror})",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.json:
        print(raw.decode())
        return 0
    print(format_status(json.loads(raw)), end="")
    return 0
