"""Which scheme a registry marked insecure is spoken to in, decided as containers/image
decides it (``detectPropertiesHelper``): https without verifying its certificate, else
plain http.

Registry layer. The first request to such a host asks ``/v2/`` over https, its certificate
and name not checked (``registry/tls.py``), and without credentials. Any answer means
https. Only a failure to connect (a TLS error: the port speaks plain http; refused: nothing
listens on https's port) has ``/v2/`` asked over plain http, whose answer must be a
registry's (200 or 401, as containers/image's ping requires); a timeout, or no registry on
http either, decides nothing, and the next request asks again. A decision holds for the
mount's life: once https answered, plain http is never used for the host, so credentials
never go in the clear to a host that speaks TLS. Concurrent first requests share one
asking (a single flight).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import httpx
import trio

from regfs.domain.errors import RegfsError, Unavailable
from regfs.registry.errors import describe

log = logging.getLogger(__name__)

Probe = Callable[[str], Awaitable[int]]
"""GET a URL without credentials nor redirects: its status, or an httpx error; a
``RegfsError`` (a deadline) for nothing in time."""
REGISTRY_STATUSES = frozenset({200, 401})
"""What ``/v2/`` answers over plain http for containers/image to take it as a registry."""


class _Asking:
    """One host's asking under way: done with the scheme decided, or an error, or with
    neither if its asker was cancelled (a waiter then asks itself)."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: RegfsError | None = None


class Schemes:
    """The scheme of each insecure host asked so far, by host[:port] (the API host)."""

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._decided: dict[str, str] = {}
        self._asking: dict[str, _Asking] = {}

    def decided(self, netloc: str) -> str | None:
        """``https`` or ``http`` once decided; None before."""
        return self._decided.get(netloc)

    async def decide(self, netloc: str) -> str:
        """The host's scheme, asking it first if no request did yet; ``Unavailable`` if it
        could not be asked (the next call asks again)."""
        while netloc not in self._decided:
            asking = self._asking.get(netloc)
            if asking is not None:
                await asking.done.wait()
                if asking.error is not None:
                    raise asking.error
                continue
            asking = self._asking[netloc] = _Asking()
            try:
                self._decided[netloc] = await self._ask(netloc)
            except RegfsError as error:
                asking.error = error
                raise
            finally:
                del self._asking[netloc]
                asking.done.set()
        return self._decided[netloc]

    async def _ask(self, netloc: str) -> str:
        try:
            await self._probe(f"https://{netloc}/v2/")
        except httpx.ConnectError as error:  # a TLS error, refused: not a timeout
            https_failure = describe(error)
        except httpx.HTTPError as error:
            raise Unavailable(f"{netloc} (insecure): https: {describe(error)}") from None
        else:
            log.info("%s (insecure): https, its certificate not verified", netloc)
            return "https"
        try:
            status = await self._probe(f"http://{netloc}/v2/")
        except httpx.HTTPError as error:
            raise Unavailable(
                f"{netloc} (insecure): https: {https_failure}; plain http: {describe(error)}"
            ) from None
        if status not in REGISTRY_STATUSES:
            raise Unavailable(
                f"{netloc} (insecure): https: {https_failure}; plain http: /v2/ answers "
                f"HTTP {status}, not as a registry"
            )
        log.info("%s (insecure): plain http (https: %s)", netloc, https_failure)
        return "http"
