"""Start records: the files an image's start reads, pushed as a referrer of the image.

Domain layer: pure, stdlib only. A cold start reads file after file, and on a lazily read
layer each miss waits a round trip; eStargz avoids that by putting the files its builder
saw a start read first in the blob (``.prefetch.landmark``), but zstd:chunked, SOCI and
eStargz images built without a record say nothing of what a start reads. A start record
says it for any image, without rebuilding it: an OCI artifact (an image manifest whose
``artifactType`` is ``START_RECORD``, config the empty descriptor, one layer: a JSON
document ``{"files": ["usr/bin/python3.11", …]}``) whose ``subject`` is the image
manifest. A mount finds it among the image's referrers and fetches those files together
when the image is first read.

Trust: no digest of the image covers a referrer, and anyone who may push to the
repository may add one. A record only says what to fetch early; what is served is still
checked against the image's own digests, so a wrong or hostile record costs bytes, never
a wrong byte, and what it may ask for is bounded (``MAX_RECORD_BYTES``, ``MAX_FILES``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from regfs.domain import mediatypes
from regfs.domain.artifacts import (
    EMPTY_MEDIA_TYPE,
    artifacts_among,
    blob_fields,
    compact_json,
    empty_config,
    subject_field,
)
from regfs.domain.errors import MalformedContent
from regfs.domain.manifest import Descriptor, ImageIndex, ImageManifest

START_RECORD = "application/vnd.regfs.start-record.v1+json"
"""The artifact type of a start record's manifest, and the media type of its one layer."""
MAX_RECORD_BYTES = 4 << 20
"""The largest record read: about 40 000 paths of 100 bytes."""
MAX_FILES = 65536
"""Paths read from one record at most; the rest are not fetched early."""
MAX_PATH_BYTES = 4096
"""A longer path (PATH_MAX) names nothing Linux can open: left out."""


def start_records_among(referrers: ImageIndex) -> list[Descriptor]:
    """The start records in a referrers list, newest first: the list's order is the
    order they were added in (the fallback tag's) or the registry's, and a record pushed
    again for a changed start should win."""
    return artifacts_among(referrers, START_RECORD)[::-1]


def record_blob(manifest: ImageManifest, what: str) -> Descriptor:
    """The descriptor of the record document a start record's manifest carries."""
    if manifest.artifact_type != START_RECORD:
        kind = manifest.artifact_type or "none"
        raise MalformedContent(f"{what}: not a start record (artifact type {kind!r})")
    blobs = [blob for blob in manifest.layers if blob.media_type == START_RECORD]
    if len(blobs) != 1:
        raise MalformedContent(f"{what}: a start record has one record blob, not {len(blobs)}")
    (blob,) = blobs
    if blob.size is None or blob.size > MAX_RECORD_BYTES:
        raise MalformedContent(f"{what}: record of {blob.size} bytes (at most {MAX_RECORD_BYTES})")
    return blob


def parse_record(data: bytes, what: str) -> tuple[bytes, ...]:
    """The paths of a record document, relative to the image's root, each once, in the
    order given (the order a start read them), at most ``MAX_FILES``."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedContent(f"{what}: not JSON ({error})") from None
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, list) or not all(isinstance(path, str) for path in files):
        raise MalformedContent(f'{what}: no "files" list of paths')
    return _normalized(files)


def paths_of_record_file(text: str) -> tuple[bytes, ...]:
    """The paths a record file on disk names, as a user has one: ctr-remote's
    ``--record-out`` form (one JSON object with a ``path`` per line) or one path per line
    (as cut from ``strace``'s output); blank lines and ``#`` comments are skipped."""
    paths = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            paths.append(_path_in(line, number) if line.startswith("{") else line)
    return _normalized(paths)


def _path_in(line: str, number: int) -> str:
    """The ``path`` of one line of ctr-remote's record."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"line {number}: not JSON ({error})") from None
    path = entry.get("path") if isinstance(entry, dict) else None
    if not isinstance(path, str):
        raise ValueError(f'line {number}: no "path" in {line[:80]!r}')
    return path


def record_document(paths: Sequence[bytes]) -> bytes:
    """The record blob naming ``paths`` (relative to the image's root)."""
    files = [path.decode("utf-8", errors="surrogateescape") for path in paths]
    return compact_json({"files": files})


def start_record_manifest(record: Descriptor, subject: Descriptor) -> bytes:
    """The manifest of a start record carrying ``record``, referring to ``subject``."""
    return compact_json({
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "artifactType": START_RECORD,
        "config": empty_config(EMPTY_MEDIA_TYPE),
        "layers": [{"mediaType": START_RECORD, **blob_fields(record.digest, record.size)}],
        "subject": subject_field(subject),
    })  # fmt: skip


def _normalized(paths: Iterable[str]) -> tuple[bytes, ...]:
    """Each path relative to the root (a leading ``/`` or ``./`` dropped), each once,
    empty, overlong and unencodable ones left out, at most ``MAX_FILES``."""
    seen: dict[bytes, None] = {}
    for path in paths:
        relative = "/".join(part for part in path.split("/") if part not in ("", "."))
        try:  # a name not in UTF-8 was written with surrogateescape (``record_document``)
            encoded = relative.encode("utf-8", errors="surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate: no file is named so
            continue
        if encoded and len(encoded) <= MAX_PATH_BYTES:
            seen.setdefault(encoded)
            if len(seen) == MAX_FILES:
                break
    return tuple(seen)
