"""Docker schema1 manifests: the signed payload a digest covers and the derived config.

Domain layer: pure, stdlib only.

A signed schema1 manifest (``…v1+prettyjws``) is served with its JWS signatures inline,
but its digest is the sha256 of the *payload*: the bytes before the ``signatures`` member,
closed again with ``formatTail``, both given in each signature's protected header. Those
headers are not covered by the digest, so they are checked against the document's own
shape (libtrust's pretty form) and everything regfs uses is read from the payload alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from regfs.domain.errors import MalformedContent

_SIGNATURES_MEMBER = re.compile(rb'\s*,\s*"signatures"\s*:\s*')
"""What must follow the signed part: the ``signatures`` member, as libtrust writes it."""
_CLOSING_BRACE = re.compile(r"\s*}\s*")


def _b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise MalformedContent(f"schema1 signature: bad base64url: {error}") from None


def is_signed(document: dict[str, Any]) -> bool:
    """True for a schema1 document carrying JWS signatures (its digest covers a payload)."""
    return document.get("schemaVersion") == 1 and "signatures" in document


def _format_of(signature: Any) -> tuple[int, bytes]:
    """``(formatLength, formatTail)`` from one signature's protected header."""
    if not isinstance(signature, dict) or not isinstance(signature.get("protected"), str):
        raise MalformedContent("schema1 manifest: signature without a protected header")
    try:
        header = json.loads(_b64url_decode(signature["protected"]))
    except (ValueError, RecursionError):
        raise MalformedContent("schema1 manifest: protected header is not JSON") from None
    if not isinstance(header, dict):
        raise MalformedContent("schema1 manifest: protected header is not an object")
    length, tail = header.get("formatLength"), header.get("formatTail")
    if isinstance(length, bool) or not isinstance(length, int) or not isinstance(tail, str):
        raise MalformedContent("schema1 manifest: bad formatLength/formatTail")
    return length, _b64url_decode(tail)


def signed_payload(raw: bytes, document: dict[str, Any]) -> bytes:
    """The bytes a signed schema1 manifest's digest covers, checked against its shape.

    Every signature must name the same format (as libtrust requires), the signed part must
    end exactly where the ``signatures`` member begins, that member must be the document's
    last, and the tail may only close the object: so the payload and the served document
    hold the same members, and nothing outside the payload can change what is parsed.
    """
    signatures = document.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise MalformedContent("schema1 manifest: signatures is not a non-empty list")
    formats = {_format_of(signature) for signature in signatures}
    if len(formats) != 1:
        raise MalformedContent("schema1 manifest: signatures disagree on the signed format")
    ((length, tail),) = formats
    if not 0 < length <= len(raw):
        raise MalformedContent("schema1 manifest: formatLength outside the document")
    member = _SIGNATURES_MEMBER.match(raw, length)
    if member is None:
        raise MalformedContent("schema1 manifest: signed part does not end at 'signatures'")
    try:
        rest = raw[member.end() :].decode("utf-8")
        _, end = json.JSONDecoder().raw_decode(rest)
        closing = tail.decode("utf-8")
    except (ValueError, RecursionError):
        raise MalformedContent("schema1 manifest: unreadable signatures member") from None
    if not _CLOSING_BRACE.fullmatch(rest[end:]) or not _CLOSING_BRACE.fullmatch(closing):
        raise MalformedContent("schema1 manifest: content outside the signed payload")
    return raw[:length] + tail


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
