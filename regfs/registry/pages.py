"""Following a paged answer (``Link: <…>; rel="next"``) to its last page.

Registry layer. A catalog, a tag list and the referrers API all page this way; a
registry that sends a loop, or pages without end, is stopped at ``MAX_LISTING_PAGES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from regfs.domain.errors import ProtocolError
from regfs.registry import listings
from regfs.registry.http import HttpSession, Response

MAX_LISTING_PAGES = 100_000


async def follow_pages(
    session: HttpSession, url: str, what: str, take: Callable[[Response], None], *,
    headers: Mapping[str, str], max_bytes: int, decoded: bool, attempts: int,
) -> None:  # fmt: skip
    """GET ``url`` and each next page, handing each answer to ``take`` in turn (which
    may raise to stop); the caller puts it all under its deadline."""
    next_url: str | None = url
    seen: set[str] = set()
    while next_url is not None:
        if next_url in seen or len(seen) >= MAX_LISTING_PAGES:
            raise ProtocolError(f"{what}: pagination loops at {next_url}")
        seen.add(next_url)
        response = await session.send("GET", next_url, dict(headers), max_bytes,
                                      decoded=decoded, attempts=attempts)  # fmt: skip
        take(response)
        next_url = listings.next_page(response.headers.get_list("link"), str(response.url), what)
