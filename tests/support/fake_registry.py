"""A scripted HTTP server that misbehaves the ways real registries sometimes do.

Used only for failures registry:2 cannot be made to produce on demand (500s, stalls,
digest mismatches, malformed manifests, refused catalogs, paged tag lists); everything
that works is tested against the real registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.support.net import LoopbackServer


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering: a stalled registry."""


Route = Callable[[str], Reply]


class FakeRegistry:
    def __init__(self, routes: dict[str, Reply | Route]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, str]] = []
        self._server = LoopbackServer(self._handler())
        self.port = self._server.port
        self.host = self._server.host

    def stop(self) -> None:
        self._server.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, send_body: bool) -> None:
                fake.requests.append((self.command, self.path))
                path = urlsplit(self.path).path
                route = fake.routes.get(path)
                if route is None:
                    reply = Reply(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}')
                else:
                    reply = route if isinstance(route, Reply) else route(self.path)
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(reply.body)

            def do_GET(self) -> None:
                self._answer(send_body=True)

            def do_HEAD(self) -> None:
                self._answer(send_body=False)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
