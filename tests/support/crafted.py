"""Images made of hand-built layer bytes, pushed with the registry's own upload API.

umoci and skopeo refuse or repair what a hostile image carries (names that climb out,
members that lie about their size); the distribution API stores any bytes, which is what
a hostile registry user can do too.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import tarfile
import urllib.parse
import zlib
from collections.abc import Iterable

from tests.support.images import registry_request

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"


def tar_of(members: Iterable[tuple[tarfile.TarInfo, bytes | None]], tar_format: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(
    name: str, data: bytes | None = b"", **fields: object
) -> tuple[tarfile.TarInfo, bytes | None]:
    """A tar member: a file of ``data``, or (``data=None``) whatever ``type`` says."""
    info = tarfile.TarInfo(name)
    info.mtime, info.mode = 1_700_000_000, 0o644
    if data is not None:
        info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def directory(name: str, **fields: object) -> tuple[tarfile.TarInfo, bytes | None]:
    """A tar member for directory ``name`` (0755 unless ``mode`` says otherwise)."""
    return member(name, None, **{"type": tarfile.DIRTYPE, "mode": 0o755, **fields})


def gzipped(tar: bytes) -> bytes:
    return gzip.compress(tar, compresslevel=1, mtime=0)


def gzip_layer(
    *members: tuple[tarfile.TarInfo, bytes | None], tar_format: int = tarfile.PAX_FORMAT
) -> bytes:
    """A gzip layer blob of ``members``, in order."""
    return gzipped(tar_of(members, tar_format))


def multi_member_gzip(data: bytes, member_size: int) -> bytes:
    """gzip as eStargz and ``pigz --independent`` write it: one member per piece, each
    followed by an empty member (several seek points at one uncompressed offset)."""
    return b"".join(
        gzip.compress(data[i : i + member_size], mtime=0) + gzip.compress(b"", mtime=0)
        for i in range(0, len(data), member_size)
    )


def zeros_layer(size: int) -> bytes:
    """A gzip layer holding one file of ``size`` zero bytes: a decompression bomb.

    A MiB of zeros is deflated once and its bytes repeated: a full flush ends each piece
    on a byte boundary with nothing behind it to refer to, so every piece deflates alike,
    and a 2 GiB bomb takes a second instead of ten. The trailer's CRC is of the content
    meant, so an inflater that got anything else fails."""
    header = tarfile.TarInfo("zeros")
    header.size, header.mtime, header.mode = size, 1_700_000_000, 0o644
    head = header.tobuf(format=tarfile.GNU_FORMAT)
    piece = bytes(1 << 20)
    pieces = size // len(piece)
    tail = bytes(size % len(piece) + (-size) % 512 + 1024)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated_head = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    deflated_piece = deflate.compress(piece) + deflate.flush(zlib.Z_FULL_FLUSH)
    deflated_tail = deflate.compress(tail) + deflate.flush()
    crc = zlib.crc32(head)
    for _ in range(pieces):
        crc = zlib.crc32(piece, crc)
    crc = zlib.crc32(tail, crc)
    length = len(head) + pieces * len(piece) + len(tail)
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, mtime 0
    trailer = struct.pack("<II", crc, length & 0xFFFFFFFF)
    return b"".join((gzip_header, deflated_head, deflated_piece * pieces, deflated_tail, trailer))


def upload_blob(registry_url: str, repository: str, data: bytes) -> dict[str, object]:
    """A monolithic upload (a POST, then one PUT), straight to the registry; the blob's
    digest and size, as a descriptor holds them. (regfs's own is ``registry/push.py``:
    the tests push with code of their own, which a defect of regfs cannot hide.)"""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _, headers, _ = registry_request(
        f"{registry_url}/v2/{repository}/blobs/uploads/", method="POST", data=b""
    )
    location = urllib.parse.urljoin(registry_url + "/", headers["Location"])
    separator = "&" if "?" in location else "?"
    registry_request(
        f"{location}{separator}digest={digest}",
        method="PUT",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    return {"digest": digest, "size": len(data)}


def descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
            "size": len(data)}  # fmt: skip


def oci_image(
    layers: list[bytes],
    media_type: str = GZIP_LAYER,
    *,
    diff_ids: list[str] | None = None,
) -> tuple[bytes, dict[str, object]]:
    """The config blob and the manifest of an image of ``layers`` (blobs of ``media_type``,
    bottom first); the config names ``diff_ids`` (umoci unpack checks them)."""
    rootfs = {"type": "layers", "diff_ids": diff_ids or []}
    config = {"architecture": "amd64", "os": "linux", "rootfs": rootfs}
    config_bytes = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config_bytes),
        "layers": [descriptor(media_type, layer) for layer in layers],
    }
    return config_bytes, manifest


def push_layers(
    registry_url: str,
    reference: str,
    layers: list[bytes],
    media_type: str = GZIP_LAYER,
    *,
    diff_ids: list[str] | None = None,
) -> None:
    """Push an image of ``layers`` (see ``oci_image``) as ``repository:tag``."""
    repository, tag = reference.rsplit(":", 1)
    config, manifest = oci_image(layers, media_type, diff_ids=diff_ids)
    for blob in (config, *layers):
        upload_blob(registry_url, repository, blob)
    registry_request(
        f"{registry_url}/v2/{repository}/manifests/{tag}",
        method="PUT",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": OCI_MANIFEST},
    )
