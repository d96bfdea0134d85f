"""Signed schema1: the digest covers the JWS payload, and only the payload is parsed.

The forgeries here keep the honest manifest's digest while serving other layers: each
must be refused, never parsed into a different image.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from regfs.domain import mediatypes
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, VerificationFailed
from regfs.domain.manifest import (
    ImageManifest,
    manifest_digest,
    signed_content,
    verified_manifest,
)
from regfs.registry.schema1_signatures import verify_signatures
from tests.support.schema1 import (
    b64url_decode,
    payload,
    pretty,
    sign,
    signature,
    tail_carries_payload,
)

HONEST_LAYER, EVIL_LAYER = (f"sha256:{c * 64}" for c in "1e")
REGISTRY_2 = (Path(__file__).parent / "data" / "schema1-signed.json").read_bytes()
JWS = mediatypes.DOCKER_SCHEMA1_SIGNED


@pytest.mark.parametrize("indent", [None, 3])
def test_an_honest_signed_manifest_is_its_payload(indent: int | None) -> None:
    signed = payload(HONEST_LAYER, indent)
    raw = pretty(signed)
    manifest = verified_manifest(raw, JWS, Digest.of(signed))
    assert isinstance(manifest, ImageManifest)
    assert [str(layer.digest) for layer in manifest.layers] == [HONEST_LAYER]
    assert manifest.media_type == JWS


def test_registry_2s_own_schema1_still_verifies() -> None:
    digest = Digest.parse("sha256:cb01b061a09fc34e8ad3cc6300bc5c22f1bbc3cc8430cf7b7b2130dcd5a5e046")
    assert manifest_digest(REGISTRY_2) == digest
    assert isinstance(verified_manifest(REGISTRY_2, JWS, digest), ImageManifest)


def forged_documents() -> dict[str, bytes]:
    """Manifests that hash to the honest payload's digest, or try to, with other layers."""
    honest = payload(HONEST_LAYER)
    evil = payload(EVIL_LAYER)
    evil_length = len(evil) - 1
    return {
        # The signed part is one byte; the tail carries the rest of the honest payload.
        "tail carries the payload": tail_carries_payload(honest, evil),
        # Honest payload signed, evil members appended after the signatures.
        "members after signatures": pretty(honest)[:-1] + b',"fsLayers":[{"blobSum":"'
        + EVIL_LAYER.encode() + b'"}]}',
        # A tail that adds members the served document does not show.
        "tail adds members": pretty(
            evil, [signature(evil_length, b',"fsLayers":[{"blobSum":"'
                             + HONEST_LAYER.encode() + b'"}]}')]),
        # Two signatures naming different signed parts.
        "signatures disagree": pretty(
            evil, [signature(evil_length, b"}"), signature(evil_length - 1, b"]}")]),
        "format length beyond the document": pretty(evil, [signature(10**6, b"}")]),
        "format length negative": pretty(evil, [signature(-5, b"}")]),
        "format length a boolean": pretty(evil, [signature(True, b"}")]),  # type: ignore[arg-type]
        "no signatures": evil[:-1] + b',"signatures":[]}',
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(forged_documents()))
def test_forged_signed_manifests_are_refused(name: str) -> None:
    raw = forged_documents()[name]
    honest = Digest.of(payload(HONEST_LAYER))
    with pytest.raises((MalformedContent, VerificationFailed)):
        manifest = verified_manifest(raw, JWS, honest)
        pytest.fail(f"parsed as {manifest}")  # pragma: no cover - the failure being tested
    with pytest.raises(MalformedContent):
        manifest_digest(raw)


def test_the_first_forgery_reproduces_the_honest_digest() -> None:
    """The refusal above matters: hashing as the protected header says gives the honest
    digest, so only the shape checks stand between this document and its evil layer."""
    raw = forged_documents()["tail carries the payload"]
    protected = json.loads(raw)["signatures"][0]["protected"]
    header = json.loads(b64url_decode(protected))
    tail = b64url_decode(header["formatTail"])
    assert Digest.of(raw[: header["formatLength"]] + tail) == Digest.of(payload(HONEST_LAYER))


def test_signatures_verify_against_their_own_keys() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signed = payload(HONEST_LAYER, indent=3)
    raw = sign(signed, key)
    assert isinstance(verified_manifest(raw, JWS, Digest.of(signed)), ImageManifest)
    verify_signatures(signed, json.loads(raw)["signatures"])
    with pytest.raises(VerificationFailed, match="does not verify"):
        verify_signatures(signed, json.loads(sign(signed, key, tamper=True))["signatures"])
    with pytest.raises(VerificationFailed, match="does not verify"):
        verify_signatures(payload(EVIL_LAYER, indent=3), json.loads(raw)["signatures"])


@pytest.mark.parametrize(
    "blocks",
    [[], [{}], [{"header": {"alg": "HS256"}, "signature": "", "protected": ""}],
     [{"header": {"alg": "ES256", "jwk": {"kty": "EC"}}, "signature": "", "protected": ""}],
     [{"header": {"alg": "ES256", "x5c": ["!!"]}, "signature": "", "protected": ""}]],
)  # fmt: skip
def test_unusable_signatures_are_verification_failures(blocks: list[object]) -> None:
    with pytest.raises(VerificationFailed):
        verify_signatures(payload(HONEST_LAYER), blocks)


def test_registry_2s_own_signature_verifies() -> None:
    verify_signatures(signed_content(REGISTRY_2), json.loads(REGISTRY_2)["signatures"])
