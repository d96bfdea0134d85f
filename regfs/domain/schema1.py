"""Docker schema1 manifests: the signed payload a digest covers and the derived config.

Domain layer: pure, stdlib only.

A signed schema1 manifest (``…v1+prettyjws``) is served with its JWS signatures inline,
but its digest is the sha256 of the *payload*: the bytes before the ``signatures`` key,
closed again with ``formatTail``, both given in each signature's protected header.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from regfs.domain.errors import MalformedContent


def _b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise MalformedContent(f"schema1 signature: bad base64url: {error}") from None


def signed_payload(raw: bytes, document: dict[str, Any]) -> bytes:
    """The bytes a signed schema1 manifest's digest covers (``raw`` if it has no signatures)."""
    signatures = document.get("signatures")
    if not signatures:
        return raw
    if not isinstance(signatures, list) or not isinstance(signatures[0], dict):
        raise MalformedContent("schema1 manifest: signatures is not a list of objects")
    protected = signatures[0].get("protected")
    if not isinstance(protected, str):
        raise MalformedContent("schema1 manifest: signature without a protected header")
    try:
        header = json.loads(_b64url_decode(protected))
    except (ValueError, RecursionError):
        raise MalformedContent("schema1 manifest: protected header is not JSON") from None
    if not isinstance(header, dict):
        raise MalformedContent("schema1 manifest: protected header is not an object")
    length, tail = header.get("formatLength"), header.get("formatTail")
    if not isinstance(length, int) or not isinstance(tail, str) or not 0 < length <= len(raw):
        raise MalformedContent("schema1 manifest: bad formatLength/formatTail")
    return raw[:length] + _b64url_decode(tail)


def derived_config(history: list[Any]) -> bytes:
    """The config schema1 images carry: the newest history entry's ``v1Compatibility``."""
    if not history or not isinstance(history[0], dict):
        raise MalformedContent("schema1 manifest: empty or malformed history")
    text = history[0].get("v1Compatibility")
    if not isinstance(text, str):
        raise MalformedContent("schema1 manifest: history[0].v1Compatibility is not a string")
    return text.encode()


def is_throwaway(history_entry: Any) -> bool:
    """True for history entries that made no filesystem change (``throwaway: true``)."""
    if not isinstance(history_entry, dict):
        raise MalformedContent("schema1 manifest: history entry is not an object")
    text = history_entry.get("v1Compatibility")
    if not isinstance(text, str):
        raise MalformedContent("schema1 manifest: v1Compatibility is not a string")
    try:
        compat = json.loads(text)
    except (ValueError, RecursionError):
        raise MalformedContent("schema1 manifest: v1Compatibility is not JSON") from None
    return isinstance(compat, dict) and compat.get("throwaway") is True
