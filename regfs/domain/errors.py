"""The exception tree every layer speaks; ``regfs.fuse.errors`` maps it to errnos.

Domain layer: pure, stdlib only.

    RegfsError
     ├── NotFound            no such host, repository, tag, digest or path   → ENOENT
     │    └── NoEntry        an immutable directory has no such name (cached) → ENOENT
     ├── AccessDenied        the registry refused us (401/403)                → EACCES
     ├── Unavailable         network, 5xx, 429, deadline passed (temporary)   → EIO
     │    └── Evicted        another process evicted a file still used here   → EIO
     ├── ProtocolError       the registry answered something unusable         → EIO
     ├── MalformedContent    bytes that do not parse as what they claim       → EIO
     ├── VerificationFailed  bytes whose digest or size is not the expected   → EIO
     └── ReadOnly            a write (regfs serves, never stores)             → EROFS
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable


class RegfsError(Exception):
    """Base of every error regfs raises on purpose."""


class NotFound(RegfsError):
    """The named thing does not exist (or the registry says so)."""


class NoEntry(NotFound):
    """A directory under a digest (which never changes) has no entry of that name: the
    answer is as permanent as the directory, so the kernel may remember it."""


class AccessDenied(RegfsError):
    """The registry refused access, even after the authentication dance."""


class Unavailable(RegfsError):
    """A temporary failure: the next attempt may succeed."""


class Evicted(Unavailable):
    """A file this process had checked and kept in the cache dir (a layer index it had
    closed) was evicted by another process sharing the dir, whose eviction cannot know
    this process still uses it. ``rebuild``, when known, puts it back (as a first read
    would build it); a request that met this is then asked again, once."""

    def __init__(self, message: str, rebuild: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__(message)
        self.rebuild = rebuild


class ProtocolError(RegfsError):
    """The registry answered with a status or shape we cannot use."""


class MalformedContent(RegfsError):
    """Content (JSON, a manifest, a header) that does not parse as what it claims to be."""


class VerificationFailed(RegfsError):
    """Bytes whose digest or size differs from the one that names them."""


class ReadOnly(RegfsError):
    """A write to the mount: refused by the daemon where the mount itself is not ``ro``
    (a layer store, which must see podman's reference counting)."""
