"""Platforms (``os/arch[/variant]``): parsing, normalising and choosing one from an index.

Domain layer: pure, stdlib only. Normalisation follows containerd's: ``aarch64`` is
``arm64``, whose default variant is ``v8``; ``arm`` defaults to ``v7``.
"""

from __future__ import annotations

import platform as host_platform_module
from collections.abc import Iterable
from dataclasses import dataclass

from regfs.domain.errors import MalformedContent

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i686": "386"}
_DEFAULT_VARIANTS = {"arm64": "v8", "arm": "v7"}


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` as given to ``--platform``."""
        parts = text.split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise MalformedContent(f"platform must be os/arch[/variant], got {text!r}")
        return cls(*parts).normalized()

    def normalized(self) -> Platform:
        arch = _ARCH_ALIASES.get(self.architecture, self.architecture)
        variant = self.variant or _DEFAULT_VARIANTS.get(arch, "")
        if arch == "amd64" and variant == "v1":
            variant = ""
        return Platform(self.os.lower(), arch, variant)

    @property
    def dir_name(self) -> str:
        """The symlink name in an index dir, e.g. ``linux-arm64-v8``."""
        return "-".join(part for part in (self.os, self.architecture, self.variant) if part)

    @property
    def makes_file_name(self) -> bool:
        """Whether ``dir_name`` is one name a directory may hold: an index is anyone's
        JSON, and one name with a ``/``, a NUL or none at all fails a whole listing."""
        name = self.dir_name
        return name not in ("", ".", "..") and not {"/", "\0"} & set(name) \
            and len(name.encode()) <= 255  # fmt: skip

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


def host_platform() -> Platform:
    """The platform of the machine regfs runs on, the default choice from an index."""
    return Platform("linux", host_platform_module.machine()).normalized()


def best_match(wanted: Platform, candidates: Iterable[Platform]) -> int | None:
    """Index of the candidate to use for ``wanted``, or None when none fits.

    An exact (normalised) match wins; otherwise the same os and architecture with an
    unspecified variant on one side; the first of equals wins, as the index orders them.
    """
    wanted = wanted.normalized()
    fallback = None
    for position, offered in enumerate(candidates):
        candidate = offered.normalized()
        if (candidate.os, candidate.architecture) != (wanted.os, wanted.architecture):
            continue
        if candidate.variant == wanted.variant:
            return position
        if fallback is None and not (candidate.variant and wanted.variant):
            fallback = position
    return fallback
