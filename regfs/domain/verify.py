"""The one check every piece of content passes before regfs uses it.

Domain layer: pure, stdlib only. Whatever a digest covers (a manifest, a config, a TOC,
a zTOC, a chunk of a layer, a compressed span) is hashed here and returned only if it is
what the digest names; a mismatch is ``VerificationFailed``, naming the piece. The whole
layer blob, too large to hold, is hashed as it streams (``layers/first_pass.py``) and
checked by ``verified_stream`` when it ends.
"""

from __future__ import annotations

import hashlib

from regfs.domain.digest import Digest
from regfs.domain.errors import VerificationFailed


def verified(data: bytes, digest: Digest, *, size: int | None = None, what: str) -> bytes:
    """``data`` if it hashes to ``digest`` (and is ``size`` bytes long, when given)."""
    actual = hashlib.new(digest.algorithm, data).hexdigest()
    verified_stream(actual, len(data), digest, size=size, what=what)
    return data


def verified_sha256(data: bytes, sha256: bytes, *, what: str) -> bytes:
    """``data`` if its sha256 is ``sha256`` (the raw 32 bytes that name a cached piece)."""
    if hashlib.sha256(data).digest() != sha256:
        raise VerificationFailed(f"{what} does not match its digest sha256:{sha256.hex()}")
    return data


def verified_stream(
    actual_hex: str, length: int, digest: Digest, *, size: int | None = None, what: str
) -> None:
    """A stream of ``length`` bytes that hashed to ``actual_hex`` is what ``digest`` (and
    ``size``) names, or ``VerificationFailed``."""
    if actual_hex != digest.hex or (size is not None and length != size):
        expected = f" of {size} bytes" if size is not None else ""
        raise VerificationFailed(
            f"{what}: {length} bytes hashing to {digest.algorithm}:{actual_hex}, not "
            f"{digest}{expected}"
        )
