"""A blob's bytes fed to a consumer as they arrive, which may stop the stream early.

Registry layer. For bytes fetched ahead of knowing how many will be wanted: an eStargz
blob's first bytes, streamed while its TOC is fetched (``layers/early_bytes.py``). Unlike
``RegistryClient.get_blob_range`` nothing is held here, and the consumer's stopping ends
the request (its connection closed), so a stream stopped early costs only what crossed the
wire. Retries cover getting an answer; when a place fails midway, the next is asked for the
bytes not yet fed, from where the last one stopped.
"""

from __future__ import annotations

import math

from regfs.domain.digest import Digest
from regfs.registry.bodies import Consumer, consume_range
from regfs.registry.http import HttpSession
from regfs.registry.places import BlobSource, Places
from regfs.registry.retry_policy import Deadline


async def stream_range(
    session: HttpSession,
    places: Places,
    host: str,
    repository: str,
    digest: Digest,
    *,
    span: tuple[int, int],
    consume: Consumer,
    urls: tuple[str, ...],
) -> None:
    """Feed bytes ``span`` (``[start, end)``) of the blob to ``consume`` until it returns
    False or they have all come (fewer if the body ends short: the caller counts)."""
    fed, end = span

    async def counted(data: bytes) -> bool:
        nonlocal fed
        fed += len(data)
        return await consume(data)

    async def fetch(source: BlobSource) -> None:
        if fed >= end:
            return
        with session.deadline(source.what):
            response = await session.open(
                "GET", source.url, {"Range": f"bytes={fed}-{end - 1}"}, sponsor=source.sponsor,
                attempts=source.attempts,
            )  # fmt: skip
        # the body has no deadline (the consumer may pause it): a stall is httpx's read
        # timeout, and a FUSE request's end is said of this stream
        with Deadline(math.inf, source.what, missing="the rest of the range not received"):
            await consume_range(response, fed, f"GET {source.url}", counted)

    await places.pull_blob(host, repository, digest, urls, fetch)
