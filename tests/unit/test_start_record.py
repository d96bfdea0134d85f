"""Start records (``domain/start_record.py``): the file a user has, the document and
manifest pushed, and what a mount accepts from a referrer anyone may push (bounded, and
nothing but ``MalformedContent`` for any bytes)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regfs.domain import mediatypes
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent
from regfs.domain.manifest import Descriptor, ImageIndex, ImageManifest, parse_manifest
from regfs.domain.start_record import (
    MAX_FILES,
    MAX_RECORD_BYTES,
    START_RECORD,
    parse_record,
    paths_of_record_file,
    record_blob,
    record_document,
    start_record_manifest,
    start_records_among,
)

IMAGE = Descriptor(mediatypes.OCI_MANIFEST, Digest.of(b"image"), 1234)


def test_ctr_remote_s_record_and_plain_lines_give_the_same_paths() -> None:
    """ctr-remote's ``--record-out`` (a JSON object per line) and one path per line, with
    or without a leading ``/`` or ``./``, each path once, in the order first named."""
    ctr_remote = '{"path":"usr/bin/python3.11","manifestDigest":"sha256:0","layerIndex":0}\n' \
                 '{"path":"/etc/ld.so.cache"}\n{"path":"usr/bin/python3.11"}\n'  # fmt: skip
    plain = "# from strace\n/usr/bin/python3.11\n\n./etc/ld.so.cache\n/usr//bin/python3.11\n"
    expected = (b"usr/bin/python3.11", b"etc/ld.so.cache")
    assert paths_of_record_file(ctr_remote) == expected
    assert paths_of_record_file(plain) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [('{"path": 1}\n', 'line 1: no "path"'), ("/a\n{not json\n", "line 2: not JSON")],
)
def test_a_record_file_that_does_not_parse_says_which_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paths_of_record_file(text)


def test_the_manifest_pushed_is_an_artifact_that_names_its_record_and_its_image() -> None:
    document = record_document([b"usr/bin/python3.11", b"etc/ld.so.cache"])
    record = Descriptor(START_RECORD, Digest.of(document), len(document))
    raw = start_record_manifest(record, IMAGE)
    manifest = parse_manifest(raw, mediatypes.OCI_MANIFEST)
    assert isinstance(manifest, ImageManifest)
    assert manifest.artifact_type == START_RECORD
    assert record_blob(manifest, "record") == record
    assert json.loads(raw)["subject"] == {
        "mediaType": IMAGE.media_type, "digest": str(IMAGE.digest), "size": IMAGE.size
    }  # fmt: skip
    assert parse_record(document, "record") == (b"usr/bin/python3.11", b"etc/ld.so.cache")


def test_the_newest_record_among_the_referrers_comes_first() -> None:
    def referrer(name: bytes, artifact_type: str) -> Descriptor:
        return Descriptor(mediatypes.OCI_MANIFEST, Digest.of(name), 10,
                          artifact_type=artifact_type)  # fmt: skip

    old, soci, new = (referrer(b"old", START_RECORD), referrer(b"soci", "application/x-soci"),
                      referrer(b"new", START_RECORD))  # fmt: skip
    listing = ImageIndex(mediatypes.OCI_INDEX, (old, soci, new))
    assert start_records_among(listing) == [new, old]


@pytest.mark.parametrize(
    ("layers", "artifact_type", "message"),
    [
        ((), START_RECORD, "one record blob, not 0"),
        ((Descriptor(START_RECORD, Digest.of(b"x"), MAX_RECORD_BYTES + 1),), START_RECORD,
         "at most"),
        ((Descriptor(START_RECORD, Digest.of(b"x"), 1),), "application/x-other",
         "not a start record"),
    ],
)  # fmt: skip
def test_a_record_manifest_that_is_not_one_is_refused(
    layers: tuple[Descriptor, ...], artifact_type: str, message: str
) -> None:
    manifest = ImageManifest(mediatypes.OCI_MANIFEST, None, layers, artifact_type=artifact_type)
    with pytest.raises(MalformedContent, match=message):
        record_blob(manifest, "record")


def test_names_not_in_utf8_go_round_and_lone_surrogates_are_left_out() -> None:
    document = record_document([b"etc/caf\xe9", b"usr/bin/python3"])
    assert parse_record(document, "record") == (b"etc/caf\xe9", b"usr/bin/python3")
    hostile = json.dumps({"files": ["\ud800", "a/\udc80\ud83d", "ok"]}).encode()
    assert parse_record(hostile, "record") == (b"ok",)


def test_a_record_is_read_up_to_its_bound_of_files() -> None:
    document = json.dumps({"files": [f"f/{n}" for n in range(MAX_FILES + 10)] + [""]})
    paths = parse_record(document.encode(), "record")
    assert len(paths) == MAX_FILES
    assert paths[-1] == f"f/{MAX_FILES - 1}".encode()


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_malformed(data: bytes) -> None:
    try:
        paths = parse_record(data, "record")
    except MalformedContent:
        return
    assert all(path and not path.startswith(b"/") for path in paths)


@given(st.lists(st.text(st.characters(exclude_categories=[]), max_size=40), max_size=30))
def test_any_paths_come_back_relative_each_once(files: list[str]) -> None:
    paths = parse_record(json.dumps({"files": files}).encode(), "record")
    assert len(set(paths)) == len(paths)
    assert all(path and not path.startswith(b"/") and b"//" not in path for path in paths)
