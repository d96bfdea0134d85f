"""Writing to a registry: blobs, and a manifest that refers to another (a referrer).

Registry layer, what ``regfs index push`` sends. Every request goes to the registry
itself, never to a mirror (``RegistryClient.send_to_origin``). A blob goes up in one piece
(a POST opens the upload, one PUT brings all its bytes and its digest: the monolithic
upload every registry accepts), unless the repository has it already. A referrer is
listed through the registry's referrers API when it has one (it answers the manifest
upload with ``OCI-Subject``), else added to the image index tagged ``sha256-<hex>`` of its
subject, the fallback of OCI distribution-spec 1.1 that oras and soci-snapshotter read too.
"""

from __future__ import annotations

from regfs.domain import mediatypes
from regfs.domain.artifacts import referrers_tag, with_referrer
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, NotFound
from regfs.domain.manifest import Descriptor, ImageIndex, parse_manifest
from regfs.registry import endpoints
from regfs.registry.client import RegistryClient


async def push_blob(client: RegistryClient, host: str, repository: str, data: bytes) -> Digest:
    """Upload ``data`` as a blob of ``repository`` (a POST, then one PUT), unless the
    registry has it; its digest."""
    digest = Digest.of(data)
    try:
        await client.blob_exists(host, repository, digest)
        return digest
    except NotFound:
        pass
    started = await client.send_to_origin(
        "POST", host, endpoints.uploads_path(host, repository), {}, b""
    )
    location = started.get("location")
    if not location:
        raise MalformedContent(f"{host}/{repository}: blob upload started without a Location")
    separator = "&" if "?" in location else "?"
    await client.send_to_origin(
        "PUT", host, f"{location}{separator}digest={digest}",
        {"Content-Type": "application/octet-stream"}, data,
    )  # fmt: skip
    return digest


async def push_referrer(
    client: RegistryClient,
    host: str,
    repository: str,
    manifest: bytes,
    *,
    subject: Digest,
    artifact_type: str,
) -> Digest:
    """Put ``manifest`` (an OCI image manifest whose ``subject`` is ``subject``) by its
    digest, and list it among ``subject``'s referrers; its digest."""
    digest = Digest.of(manifest)
    path = endpoints.manifest_path(host, repository, str(digest))
    headers = {"Content-Type": mediatypes.OCI_MANIFEST}
    answer = await client.send_to_origin("PUT", host, path, headers, manifest)
    if "oci-subject" not in answer:  # no referrers API: the fallback tag lists it
        referrer = Descriptor(mediatypes.OCI_MANIFEST, digest, len(manifest),
                              artifact_type=artifact_type)  # fmt: skip
        await _add_to_referrers_tag(client, host, repository, subject, referrer)
    return digest


async def _add_to_referrers_tag(
    client: RegistryClient, host: str, repository: str, subject: Digest, referrer: Descriptor
) -> None:
    tag = referrers_tag(subject)
    existing = raw = None
    try:
        fetched = await client.get_manifest(host, repository, tag)
        raw = fetched.raw
        listing = parse_manifest(raw, fetched.media_type)
        existing = listing if isinstance(listing, ImageIndex) else None
    except NotFound:
        pass
    updated = with_referrer(existing, raw if existing else None, referrer, {})
    path = endpoints.manifest_path(host, repository, tag)
    await client.send_to_origin("PUT", host, path, {"Content-Type": mediatypes.OCI_INDEX}, updated)
