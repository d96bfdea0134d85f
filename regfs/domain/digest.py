"""Content digests (``algorithm:hex``) and their directory-name form (``algorithm-hex``).

Domain layer: pure, stdlib only.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from regfs.domain.errors import MalformedContent

_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_DIGEST = re.compile(r"(sha256|sha512):([0-9a-f]+)")
_DIR_NAME = re.compile(r"(sha256|sha512)-([0-9a-f]+)")


@dataclass(frozen=True, slots=True)
class Digest:
    """A content address such as ``sha256:3f1c…``; only algorithms we can verify are accepted."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        match = _DIGEST.fullmatch(text)
        if not match or len(match.group(2)) != _HEX_LENGTHS[match.group(1)]:
            raise MalformedContent(f"not a sha256/sha512 digest: {text[:100]!r}")
        return cls(match.group(1), match.group(2))

    @classmethod
    def from_dir_name(cls, name: str) -> Digest | None:
        """The digest a ``sha256-<hex>`` directory name stands for, or None for other names."""
        match = _DIR_NAME.fullmatch(name)
        if not match or len(match.group(2)) != _HEX_LENGTHS[match.group(1)]:
            return None
        return cls(match.group(1), match.group(2))

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def matches(self, data: bytes) -> bool:
        return hashlib.new(self.algorithm, data).hexdigest() == self.hex

    @property
    def dir_name(self) -> str:
        """The form used as a file name: ``:`` is awkward in paths and in overlayfs options."""
        return f"{self.algorithm}-{self.hex}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
