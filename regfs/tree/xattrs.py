"""The extended attributes regfs shows, by name, in one place.

Tree layer, names only (no IO): the nodes answer them; ``regfs status``, ``prefetch`` and
``cache stats`` ask a mount for them (``regfs.commands``).
"""

from __future__ import annotations

DIGEST_XATTR = "user.regfs.digest"
"""On image, index and layer dirs: the digest they are named by."""
MEDIA_TYPE_XATTR = "user.regfs.media_type"
PLATFORM_XATTR = "user.regfs.platform"
"""On image and index dirs: the image's platform (an index's: the one shown)."""
ACCESS_XATTR = "user.regfs.access"
"""On layer dirs: how the layer is (or would be) read."""
FETCHED_XATTR = "user.regfs.fetched"
"""On image and layer dirs: how much of the layers is in the cache, fetching nothing."""
LAYER_XATTR = "user.regfs.layer"
"""On ``rootfs/`` files and dirs: which layer gives the entry (asked for by name only, not
listed, so that ``cp -a``, ``rsync -X`` and ``tar --xattrs`` copy the image's own)."""
STALE_XATTR = "user.regfs.stale"
"""On host and repository dirs, while the registry cannot be reached: which of their answers
are the last kept ones, and since when (JSON: ``catalog``, ``tags``, ``targets``)."""
STATUS_XATTR = "user.regfs.status"
"""On the mountpoint (asked for by name, not listed): the mount's state, as JSON."""
OPAQUE_XATTR = "trusted.overlay.opaque"
"""``y`` on a layer's opaque dirs (``.wh..wh..opq``), as overlayfs reads lower dirs."""
USER_OPAQUE_XATTR = "user.overlay.opaque"
"""The same, for overlayfs mounted with ``userxattr`` (rootless podman's, in a user
namespace), which reads no other. Asked for by name, not listed: overlayfs mounted by
root passes a lower dir's listed ``user.`` attributes through to its merged dir."""

PROBED_BY_LS = ("security.selinux", "system.posix_acl_access", "system.posix_acl_default")
"""Attributes ``ls -l`` asks of every entry: never worth fetching a layer for."""
