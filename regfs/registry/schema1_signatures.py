"""Checking the JWS signatures of a signed schema1 manifest (``--verify-schema1-signatures``).

Registry layer (uses ``cryptography``). Each signature block carries its key, as a JWK or
an ``x5c`` certificate chain (the leaf's key is used; the chain is not checked against a
trust store), an algorithm, a protected header and the signature over
``protected + "." + base64url(payload)``, libtrust's signing input. The digest already
vouches for the payload; this says who signed it, as systemd-importd's
``--verify=signature`` did. Every signature must verify.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from regfs.domain.errors import VerificationFailed

_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()
}  # fmt: skip
_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()
}  # fmt: skip
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def _b64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise VerificationFailed("schema1 signature: bad base64url") from None


def _integer(text: Any) -> int:
    if not isinstance(text, str):
        raise VerificationFailed("schema1 signature: a JWK number is not a string")
    return int.from_bytes(_b64url(text), "big")


def _key(header: dict[str, Any]) -> PublicKey:
    jwk, chain = header.get("jwk"), header.get("x5c")
    if isinstance(jwk, dict) and jwk.get("kty") == "EC" and jwk.get("crv") in _CURVES:
        numbers = ec.EllipticCurvePublicNumbers(
            _integer(jwk.get("x")), _integer(jwk.get("y")), _CURVES[jwk["crv"]]
        )
        return numbers.public_key()
    if isinstance(jwk, dict) and jwk.get("kty") == "RSA":
        return rsa.RSAPublicNumbers(_integer(jwk.get("e")), _integer(jwk.get("n"))).public_key()
    if isinstance(chain, list) and chain and isinstance(chain[0], str):
        try:
            leaf = x509.load_der_x509_certificate(base64.b64decode(chain[0]))
        except (ValueError, binascii.Error):
            raise VerificationFailed("schema1 signature: unreadable x5c certificate") from None
        key = leaf.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            return key
    raise VerificationFailed("schema1 signature: no usable jwk or x5c key")


def _verify_one(block: Any, encoded_payload: str) -> None:
    if not isinstance(block, dict) or not isinstance(block.get("header"), dict):
        raise VerificationFailed("schema1 signature: a signature block without a header")
    protected, signature = block.get("protected"), block.get("signature")
    algorithm = block["header"].get("alg")
    if not isinstance(protected, str) or not isinstance(signature, str):
        raise VerificationFailed("schema1 signature: missing protected header or signature")
    if not isinstance(algorithm, str) or algorithm[2:] not in _HASHES:
        raise VerificationFailed(f"schema1 signature: unsupported algorithm {algorithm!r}")
    key = _key(block["header"])
    message = f"{protected}.{encoded_payload}".encode()
    digest = _HASHES[algorithm[2:]]
    raw = _b64url(signature)
    try:
        if algorithm.startswith("ES") and isinstance(key, ec.EllipticCurvePublicKey):
            half = len(raw) // 2
            der = utils.encode_dss_signature(
                int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
            )
            key.verify(der, message, ec.ECDSA(digest))
        elif algorithm.startswith("RS") and isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, message, padding.PKCS1v15(), digest)
        else:
            raise VerificationFailed(f"schema1 signature: {algorithm} does not fit its key")
    except InvalidSignature:
        raise VerificationFailed(f"schema1 signature ({algorithm}) does not verify") from None


def verify_signatures(payload: bytes, signatures: Any) -> None:
    """Raise ``VerificationFailed`` unless every signature verifies over ``payload`` (the
    signed payload, ``schema1.signed_payload``)."""
    if not isinstance(signatures, list) or not signatures:
        raise VerificationFailed("schema1 manifest has no signatures to verify")
    encoded = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    for block in signatures:
        _verify_one(block, encoded)
