"""Manifest parsing: every supported format, and untrusted input that must fail cleanly."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regfs.domain import mediatypes
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent
from regfs.domain.manifest import (
    ImageIndex,
    ImageManifest,
    manifest_digest,
    parse_image_config,
    parse_manifest,
)
from regfs.domain.platform import Platform

D1, D2, D3 = (f"sha256:{c * 64}" for c in "123")
SCHEMA1 = (Path(__file__).parent / "data" / "schema1-signed.json").read_bytes()
SCHEMA1_DIGEST = "sha256:cb01b061a09fc34e8ad3cc6300bc5c22f1bbc3cc8430cf7b7b2130dcd5a5e046"


def descriptor(digest: str, media_type: str, size: int = 10, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def image_json(media_type: str | None = mediatypes.OCI_MANIFEST) -> bytes:
    document: dict[str, object] = {
        "schemaVersion": 2,
        "config": descriptor(D1, mediatypes.OCI_CONFIG),
        "layers": [descriptor(D2, "application/vnd.oci.image.layer.v1.tar+gzip", 5),
                   descriptor(D3, "application/vnd.oci.image.layer.v1.tar+zstd", 7)],
    }  # fmt: skip
    if media_type:
        document["mediaType"] = media_type
    return json.dumps(document).encode()


@pytest.mark.parametrize("media_type", [mediatypes.OCI_MANIFEST, mediatypes.DOCKER_MANIFEST])
def test_image_manifests(media_type: str) -> None:
    manifest = parse_manifest(image_json(media_type), media_type)
    assert isinstance(manifest, ImageManifest)
    assert manifest.media_type == media_type
    assert manifest.config is not None and str(manifest.config.digest) == D1
    assert [str(layer.digest) for layer in manifest.layers] == [D2, D3]
    assert [layer.size for layer in manifest.layers] == [5, 7]


def test_oci_manifest_without_media_type_is_recognised_by_content_type_or_shape() -> None:
    assert (
        parse_manifest(image_json(None), mediatypes.OCI_MANIFEST).media_type
        == mediatypes.OCI_MANIFEST
    )
    assert (
        parse_manifest(image_json(None), "application/json").media_type == mediatypes.OCI_MANIFEST
    )


@pytest.mark.parametrize("media_type", [mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST_LIST])
def test_indexes(media_type: str) -> None:
    raw = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": [
        descriptor(D1, mediatypes.OCI_MANIFEST, platform={"os": "linux", "architecture": "amd64"}),
        descriptor(D2, mediatypes.OCI_MANIFEST,
                   platform={"os": "linux", "architecture": "arm64", "variant": "v8"}),
        descriptor(D3, "application/vnd.in-toto+json"),
    ]}).encode()  # fmt: skip
    index = parse_manifest(raw, "")
    assert isinstance(index, ImageIndex)
    assert [d.platform for d in index.manifests] == [
        Platform("linux", "amd64"), Platform("linux", "arm64", "v8"), None]  # fmt: skip


def test_signed_schema1_from_registry_2() -> None:
    manifest = parse_manifest(SCHEMA1, mediatypes.DOCKER_SCHEMA1_SIGNED)
    assert isinstance(manifest, ImageManifest)
    assert manifest.config is None
    assert [str(layer.digest) for layer in manifest.layers] == [
        "sha256:4e4e94cc3a1188bd082eca079b8ffb1213a8a9b0612d608d83d75947de46face"]  # fmt: skip
    assert manifest.layers[0].size is None
    assert json.loads(manifest.schema1_config or b"")["architecture"] == "amd64"


def test_signed_schema1_digest_covers_the_payload_only() -> None:
    assert str(manifest_digest(SCHEMA1)) == SCHEMA1_DIGEST
    assert str(manifest_digest(image_json())) == str(Digest.of(image_json()))


def schema1(fs_layers: list[str], throwaway: list[bool]) -> bytes:
    history = [{"v1Compatibility": json.dumps({"id": str(i), "throwaway": t})}
               for i, t in enumerate(throwaway)]  # fmt: skip
    return json.dumps({"schemaVersion": 1, "fsLayers": [{"blobSum": d} for d in fs_layers],
                       "history": history}).encode()  # fmt: skip


def test_schema1_layers_are_reordered_bottom_first_without_throwaways() -> None:
    manifest = parse_manifest(schema1([D3, D2, D1], [False, True, False]), "application/json")
    assert isinstance(manifest, ImageManifest)
    assert manifest.media_type == mediatypes.DOCKER_SCHEMA1_SIGNED
    assert [str(layer.digest) for layer in manifest.layers] == [D1, D3]
    assert json.loads(manifest.schema1_config or b"")["id"] == "0"


HOSTILE = [
    b"", b"null", b"[]", b'"x"', b"{", b"{}", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000,
    b'{"schemaVersion": 2, "mediaType": "text/plain"}',
    b'{"mediaType": "application/vnd.oci.image.manifest.v1+json"}',
    b'{"mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {}, "layers": []}',
    b'{"mediaType": "application/vnd.oci.image.manifest.v1+json", "config": '
    b'{"mediaType": "x", "digest": "sha256:1", "size": 1}, "layers": []}',
    b'{"mediaType": "application/vnd.oci.image.manifest.v1+json", "config": '
    b'{"mediaType": "x", "digest": "' + D1.encode() + b'", "size": -1}, "layers": []}',
    b'{"mediaType": "application/vnd.oci.image.manifest.v1+json", "config": '
    b'{"mediaType": "x", "digest": "' + D1.encode() + b'", "size": true}, "layers": []}',
    b'{"mediaType": "application/vnd.oci.image.manifest.v1+json", "config": '
    b'{"mediaType": "x", "digest": "' + D1.encode() + b'", "size": 1}, "layers": {}}',
    b'{"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [1]}',
    b'{"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{"mediaType": "x",'
    b' "digest": "' + D1.encode() + b'", "size": 1, "platform": "linux"}]}',
    b'{"schemaVersion": 1, "fsLayers": [{"blobSum": "' + D1.encode() + b'"}], "history": []}',
    b'{"schemaVersion": 1, "fsLayers": [1], "history": [{"v1Compatibility": "{}"}]}',
    b'{"schemaVersion": 1, "fsLayers": [], "history": [], "signatures": [{"protected": "!"}]}',
    b'{"schemaVersion": 1, "fsLayers": [{"blobSum": "' + D1.encode() + b'"}],'
    b' "history": [{"v1Compatibility": 5}]}',
]  # fmt: skip


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_manifests_raise_malformed_content(raw: bytes) -> None:
    with pytest.raises(MalformedContent):
        parse_manifest(raw, "")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)
KEYS = st.sampled_from(["schemaVersion", "mediaType", "config", "layers", "manifests",
    "fsLayers", "history", "signatures", "digest", "size", "platform", "urls"])  # fmt: skip
MANIFEST_LIKE = st.recursive(
    JSON, lambda children: st.dictionaries(KEYS, children, max_size=6), max_leaves=40
)


@given(MANIFEST_LIKE, st.sampled_from(["", *mediatypes.IMAGE_MANIFESTS, *mediatypes.INDEXES]))
def test_any_json_parses_or_raises_malformed_content(document: object, content_type: str) -> None:
    with contextlib.suppress(MalformedContent):
        parse_manifest(json.dumps(document).encode(), content_type)


@given(st.binary(max_size=2000))
def test_any_bytes_parse_or_raise_malformed_content(raw: bytes) -> None:
    with contextlib.suppress(MalformedContent):
        parse_manifest(raw, "")
    with contextlib.suppress(MalformedContent):
        manifest_digest(raw)


def test_image_config() -> None:
    config = parse_image_config(b'{"os":"linux","architecture":"arm64","variant":"v8",'
                                b'"created":"2024-01-01T00:00:00Z"}')  # fmt: skip
    assert config.platform == Platform("linux", "arm64", "v8")
    assert config.created == "2024-01-01T00:00:00Z"
    assert parse_image_config(b'{"os": 1}').platform is None
    with pytest.raises(MalformedContent):
        parse_image_config(b"[]")


@pytest.mark.parametrize(("media_type", "is_tar"), [
    ("application/vnd.oci.image.layer.v1.tar", True),
    ("application/vnd.oci.image.layer.v1.tar+gzip", True),
    ("application/vnd.oci.image.layer.v1.tar+zstd", True),
    ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", True),
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", True),
    ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", True),
    ("application/vnd.cncf.helm.chart.content.v1.tar+gzip", True),  # a chart is a tar
    ("Application/X-Tar; charset=binary", True),
    ("application/vnd.oci.image.layer.v1.tar+gzip+encrypted", False),  # ocicrypt: no key
    ("application/vnd.dev.cosign.simplesigning.v1+json", False),
    ("application/vnd.in-toto+json", False),
    ("application/vnd.oci.empty.v1+json", False),
    ("application/wasm", False),
    ("application/vnd.ollama.image.model", False),
    ("application/vnd.cncf.helm.chart.provenance.v1.prov", False),
    ("application/vnd.example.tarball+json", False),
])  # fmt: skip
def test_a_layer_is_read_as_a_tar_when_its_media_type_names_one(
    media_type: str, is_tar: bool
) -> None:
    assert mediatypes.is_tar_layer(media_type) is is_tar
