"""Reading listing responses: names from ``_catalog`` and ``tags/list``, and next pages.

Registry layer, pure (no IO). A registry's names become directory entries and URL paths,
so only names of the distribution grammar pass; the rest are skipped with one log line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

from regfs.domain.challenge import next_link
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, ProtocolError
from regfs.domain.reference import is_tag

log = logging.getLogger(__name__)

MAX_NAMES_SHOWN = 5
"""Invalid names quoted in the log line; the rest are counted."""


def string_list(body: bytes, key: str, what: str) -> list[str]:
    """The list of strings under ``key`` in a listing page (``repositories``, ``tags``)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedContent(f"{what}: response is not JSON") from None
    values = document.get(key) if isinstance(document, dict) else None
    if values is None:
        return []  # distribution sends "tags": null for a repository with no tags
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise MalformedContent(f"{what}: {key!r} is not a list of strings")
    return values


def next_page(link_headers: list[str], here: str, what: str) -> str | None:
    """The next page's URL from the ``Link`` headers of the page at ``here``: on the same
    origin, or refused (a listing must not send us, or our credentials, elsewhere)."""
    link = next_link(link_headers)
    if link is None:
        return None
    try:
        url = urljoin(here, link)
        same_origin = urlsplit(url)[:2] == urlsplit(here)[:2]
    except ValueError:
        raise ProtocolError(f"{what}: unusable next-page link {link[:200]!r}") from None
    if not same_origin:
        raise ProtocolError(f"{what}: next page on another origin: {link[:200]!r}")
    return url


def is_listable_tag(name: str) -> bool:
    # A tag spelt like a digest dir would shadow (or be shadowed by) the image it names.
    return is_tag(name) and Digest.from_dir_name(name) is None


def without_referrer_tags(tags: list[str]) -> list[str]:
    """``tags`` less the OCI referrers fallback tags (``sha256-<hex>``: the index of an
    image's signatures, SBOMs, SOCI indexes), which name no image: the digest dir of that
    name is the image they refer to."""
    return [tag for tag in tags if Digest.from_dir_name(tag) is None]


def valid_names(names: list[str], valid: Callable[[str], bool], what: str) -> list[str]:
    """The names that ``valid`` accepts; the rest are reported in one log line.

    One name with ``/`` where it cannot be, ``..`` or a NUL would make the kernel refuse
    the whole listing.
    """
    good = [name for name in names if valid(name)]
    if len(good) < len(names):
        bad = [name for name in names if not valid(name)]
        shown = ", ".join(repr(name[:100]) for name in bad[:MAX_NAMES_SHOWN])
        more = f" and {len(bad) - MAX_NAMES_SHOWN} more" if len(bad) > MAX_NAMES_SHOWN else ""
        log.warning("%s: skipped %d invalid names: %s%s", what, len(bad), shown, more)
    return good
