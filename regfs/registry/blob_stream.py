"""A blob's bytes fed to a consumer as they arrive: a whole blob into a sink, or a range
that the consumer may stop early.

Registry layer, for ``RegistryClient.download_blob`` and ``stream_blob_range``. A whole
blob (a plain layer's first pass) has no deadline of its own: each read must make progress
within ``timeout``; when its connection breaks midway, the same place is asked for the
rest (a Range from the first byte not received), up to its attempts while each brings
more; when a place fails otherwise, the sink is restarted and the next place sends the
blob from its start. A download cut off earlier whose bytes the sink still holds goes on
(``resume_from``) with the same Range from the first place asked. A range is for bytes
fetched ahead of knowing how many will be wanted: an eStargz blob's first bytes, streamed
while its TOC is fetched (``layers/early_bytes.py``). Unlike
``RegistryClient.get_blob_range`` nothing is held here, and the consumer's stopping ends
the request (its connection closed), so a stream stopped early costs only what crossed the
wire. Retries cover getting an answer; when a place fails midway, the next is asked for
the bytes not yet fed, from where the last one stopped.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

from regfs.domain.digest import Digest
from regfs.registry.bodies import BrokenOff, Consumer, consume_range
from regfs.registry.http import HttpSession
from regfs.registry.places import BlobSource, Places
from regfs.registry.retry_policy import Deadline, Progress

log = logging.getLogger(__name__)


class BlobSink(Protocol):
    """Where ``download`` puts a blob's bytes, in order, as they arrive."""

    async def write(self, data: bytes) -> None: ...

    async def restart(self) -> None:
        """Forget what was written: the next place sends the blob from its start."""


async def download(
    session: HttpSession,
    places: Places,
    host: str,
    repository: str,
    digest: Digest,
    *,
    sink: BlobSink,
    timeout: float,
    urls: tuple[str, ...],
    resume_from: int = 0,
) -> None:
    """Stream the whole blob into ``sink``; retries and the deadline cover getting an
    answer, and the body may take as long as it needs if each ``timeout`` brings some.
    ``resume_from``: the sink holds the blob's bytes before this offset already (an
    earlier download cut off), so the first place is asked only for the rest."""
    held = resume_from

    async def fetch(source: BlobSource) -> None:
        nonlocal held
        received, held = held, 0  # a later place starts over: held bytes were another's
        if not received:
            await sink.restart()
        progress = Progress(timeout, source.what, link=session.link)

        async def consume(data: bytes) -> bool:
            nonlocal received
            progress.add(len(data))
            received += len(data)
            await sink.write(data)
            return True

        for attempt in range(1, source.attempts + 1):
            before = received
            try:
                await _body_from(session, source, received, consume)
                return
            except BrokenOff as error:
                if attempt == source.attempts or received == before:
                    raise
                log.info("%s; asking for the rest", error)

    await places.pull_blob(host, repository, digest, urls, fetch)


async def _body_from(
    session: HttpSession, source: BlobSource, start: int, consume: Consumer
) -> None:
    """Feed the blob from byte ``start`` on (a Range request past the start: the rest of
    a body broken off, as docker and containerd resume a pull) to ``consume``."""
    headers = {"Range": f"bytes={start}-"} if start else {}
    with session.deadline(source.what):
        response = await session.open(
            "GET", source.url, headers, sponsor=source.sponsor, attempts=source.attempts
        )
    # the body has no deadline of its own (``Progress`` bounds a trickle), but the
    # caller's (a FUSE request's) ending it is said of this download
    with Deadline(math.inf, source.what, missing="the whole body not received"):
        await consume_range(response, start, f"GET {source.url}", consume)


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
