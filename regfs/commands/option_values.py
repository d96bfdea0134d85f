"""What the options of ``regfs`` take: paths, sizes, platforms, seconds, read from the
command line into values (``argparse`` types), with the message a bad one gets.

Application layer (``commands/parser.py`` builds the parser from them).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from regfs.domain.errors import MalformedContent
from regfs.domain.platform import Platform

CACHE_DIR_DEFAULT = "$XDG_CACHE_HOME/regfs, or ~/.cache/regfs"
"""``default_cache_dir`` for ``--help`` and the man page, which is shipped built: it
cannot name the home of the machine that built it."""


def default_cache_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return absolute_path(os.path.join(cache, "regfs"))


def absolute_path(text: str) -> Path:
    """A path option, made absolute against the directory the command was run in: the
    daemon leaves that directory (it must not keep it busy), and ``regfs status`` tells
    scripts running anywhere where the cache dir is."""
    return Path(os.path.abspath(text))


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str) -> int:
    """``10G``, ``512M``, ``1T`` or plain bytes (binary units, an optional ``iB``/``B``)."""
    number = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = number[-1:] if number[-1:] in _SIZE_UNITS else ""
    try:
        value = float(number[: len(number) - len(unit)]) * _SIZE_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 10G, 512M)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"negative size: {text!r}")
    return int(value)


def parse_size(text: str) -> int:
    """A cache size: bytes as ``parse_bytes`` reads them, at least 64 MiB."""
    value = parse_bytes(text)
    if value < 64 << 20:
        raise argparse.ArgumentTypeError(f"cache size {text!r} is below the 64M minimum")
    return value


def span_size(text: str) -> int:
    value = parse_bytes(text)
    if not 64 << 10 <= value <= 64 << 20:
        raise argparse.ArgumentTypeError(f"span size {text!r} is not within 64K and 64M")
    return value


def platform(text: str) -> Platform:
    try:
        return Platform.parse(text)
    except MalformedContent as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value
