"""Signed schema1 manifests in libtrust's pretty form, honest and forged, for the tests."""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signature(format_length: int, format_tail: bytes) -> dict[str, object]:
    """A signature block; only its protected header's format fields matter to a reader."""
    header = {"formatLength": format_length, "formatTail": b64url(format_tail)}
    return {"header": {"alg": "ES256"}, "signature": "c2ln",
            "protected": b64url(json.dumps(header).encode())}  # fmt: skip


def payload(layer: str, indent: int | None = None) -> bytes:
    """A one-layer schema1 document as a registry signs it (no signatures yet)."""
    document = {
        "schemaVersion": 1, "name": "s1/x", "tag": "1", "architecture": "amd64",
        "fsLayers": [{"blobSum": layer}],
        "history": [{"v1Compatibility": json.dumps({"id": "a", "os": "linux"})}],
    }  # fmt: skip
    return json.dumps(document, indent=indent).encode()


def pretty(signed: bytes, signatures: list[dict[str, object]] | None = None) -> bytes:
    """libtrust's pretty form: the payload up to its closing brace, then ``signatures``."""
    tail_length = 2 if signed.endswith(b"\n}") else 1
    length = len(signed) - tail_length
    members = signatures or [signature(length, signed[length:])]
    return signed[:length] + b',"signatures":' + json.dumps(members).encode() + b"}"


def tail_carries_payload(honest: bytes, evil: bytes) -> bytes:
    """``evil``'s members served under ``honest``'s digest: one signed byte, and a tail
    holding the rest of the honest payload (what a reader trusting the header hashes)."""
    return evil[:-1] + b',"signatures":' + json.dumps([signature(1, honest[1:])]).encode() + b"}"


def sign(signed: bytes, key: ec.EllipticCurvePrivateKey, tamper: bool = False) -> bytes:
    """libtrust's pretty form with a real ES256 signature by ``key`` over ``signed``."""
    tail_length = 2 if signed.endswith(b"\n}") else 1
    length = len(signed) - tail_length
    protected = b64url(json.dumps({"formatLength": length,
                                   "formatTail": b64url(signed[length:])}).encode())  # fmt: skip
    der = key.sign(f"{protected}.{b64url(signed)}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + (s ^ int(tamper)).to_bytes(32, "big")
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": b64url(numbers.x.to_bytes(32, "big")),
           "y": b64url(numbers.y.to_bytes(32, "big"))}  # fmt: skip
    block = {"header": {"jwk": jwk, "alg": "ES256"}, "signature": b64url(raw),
             "protected": protected}  # fmt: skip
    return pretty(signed, [block])
