"""A counting reverse proxy in front of the registry, which can also damage blobs.

regfs is pointed at the proxy's host instead of the registry's; every response body that
passes is counted per request path, so a test can say exactly which blob bytes a user's
action cost. ``corrupt`` flips a byte in blob bodies, ``truncate`` cuts them short, and
``blob_encoding`` labels blob bodies with a ``Content-Encoding`` they were stored with
(as object stores do for files uploaded with that metadata). Requests are counted per path.
``cut_after`` takes the link down in the middle of a blob's body until ``restore_link``.
Given a network profile (``tests/support/netprofiles.py``), the proxy is also the network:
each request waits a round trip (one more on a new connection) and bodies share the
profile's bandwidth.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from tests.support.net import LoopbackServer
from tests.support.netprofiles import Link, NetworkProfile

FORWARDED = ("Accept", "Range", "Authorization", "Content-Type")
DAMAGE = ("corrupt", "truncate", "trickle")
UNLIMITED_PIECE = 256 << 10
"""Bytes written at once without a network profile: a body's count grows as it goes."""
SEND_BUFFER = 128 << 10
"""Bytes the kernel holds for a client connection before they cross to it."""
RELAYED_PIECE = 1 << 20
"""Bytes of the registry's answer read at once to be passed on."""


class CountingProxy:
    def __init__(self, upstream_port: int, profile: NetworkProfile | None = None) -> None:
        self.upstream_port = upstream_port
        self.link = None if profile is None else Link(profile)
        """The emulated network between regfs and the registry; None: loopback's."""
        self.connections = 0
        """Connections opened to the proxy since the last ``reset``."""
        self.range_requests = 0
        """Requests with a ``Range`` header since the last ``reset``: lazy reads' round trips."""
        self.bytes_by_path: Counter[str] = Counter()
        self.requests_by_path: Counter[str] = Counter()
        self.whole_blob_gets: Counter[str] = Counter()
        """Blob GETs without a Range, by path: how often each blob was downloaded whole."""
        self.corrupt = False
        self.truncate = False
        self.blob_encoding: str | None = None
        self.redirect_blobs_to: str | None = None
        """``host:port`` blob GETs are sent to with a 307, as registries send them to S3."""
        self.ignore_range = False
        self.blob_ranges: list[tuple[str, str]] = []
        """(path, Range header) of each blob GET with a Range, in the order they came."""
        self.cut_after: tuple[str, int] | None = None
        """(path substring, bytes): once a matching blob's bodies have sent that many bytes
        in all, the link goes down until ``restore_link``: the body being sent stops
        midway and every request waits, as over a network that dropped. Used up once met."""
        self._link_up = threading.Event()
        self._link_up.set()
        self.range_delay = 0.0
        self.head_delay = 0.0
        """Seconds each HEAD waits before it is answered: a registry far away."""
        self.slow: list[tuple[str, float]] = []
        """(path substring, seconds): every matching request waits that long first."""
        self.faults: list[tuple[str, str]] = []
        """(path substring, fault) pairs, each used up by the next request it matches:
        ``503``, ``429`` (Retry-After: 1), ``reset`` (closed with no answer), ``stall``
        (no answer for ``stall_seconds``, then closed), and damage to the registry's
        answer: ``corrupt`` (a byte flipped: a blob's middle one, else the last),
        ``truncate`` (half of it, then closed), ``trickle`` (``trickle_rate`` bytes a
        second). Damage is taken by GETs only: a HEAD has no body to damage."""
        self.trickle_rate = 2.0
        self.trickle_seconds: float | None = None
        """Seconds after which a trickled answer is closed unfinished (None: never)."""
        self.stall_seconds = 10.0
        """Seconds a ``stall`` fault holds its request before closing it unanswered, unless
        ``end_stalls`` ends it first."""
        self._stalls_ended = threading.Event()
        self.gone = False
        """Every request is closed unanswered, also on connections already open: a
        registry gone away (``stop`` leaves open connections served)."""
        self.path_prefix = ""
        """Serve the registry below this prefix only, as a portal does (``/some/prefix``)."""
        self.authorization_seen: list[str] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(self._handler())
        self.port = self._server.port
        self.host = self._server.host

    def stop(self) -> None:
        self.restore_link()
        self._server.stop()

    def restore_link(self) -> None:
        """Bring the link ``cut_after`` took down up again: what waited goes on."""
        self._link_up.set()

    def _wait_for_link(self, path: str) -> None:
        """Take the link down if ``cut_after`` says so now, and wait while it is down."""
        with self._lock:
            cut = self.cut_after
            if cut is not None and cut[0] in path and self.bytes_by_path[path] >= cut[1]:
                self.cut_after = None
                self._link_up.clear()
        self._link_up.wait()

    def blob_bytes(self, digest: str | None = None) -> int:
        """Body bytes served for blob requests (of one digest, or all)."""
        with self._lock:
            return sum(
                count for path, count in self.bytes_by_path.items()
                if "/blobs/" in path and (digest is None or path.endswith(digest))
            )  # fmt: skip

    def reset(self) -> None:
        with self._lock:
            self.bytes_by_path.clear()
            self.requests_by_path.clear()
            self.whole_blob_gets.clear()
            self.blob_ranges.clear()
            self.connections = self.range_requests = 0

    def end_stalls(self) -> None:
        """Close every request a ``stall`` fault holds now, unanswered, as its end would:
        a test need not wait ``stall_seconds`` for the stalled attempts to be over."""
        with self._lock:
            ended, self._stalls_ended = self._stalls_ended, threading.Event()
        ended.set()

    def fault_met(self, fault: str, method: str, path: str) -> None:
        """Called as each fault of ``faults`` is taken by a request; for subclasses."""

    def _count(self, path: str, *, whole_blob: bool, ranged: bool) -> None:
        with self._lock:
            self.requests_by_path[path] += 1
            self.range_requests += ranged
            if whole_blob:
                self.whole_blob_gets[path] += 1

    def _sent(self, path: str, size: int) -> None:
        with self._lock:
            self.bytes_by_path[path] += size

    def _connected(self) -> None:
        with self._lock:
            self.connections += 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: without
            # this, each small answer waits for the client's delayed ACK (40 ms)

            def setup(self) -> None:
                super().setup()
                # a body is counted as it is written (``_send_body``): with the kernel's
                # default buffer, megabytes a client never reads (it stopped and closed)
                # would count as sent, where a network would not have carried them
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                self.answered = False
                proxy._connected()

            def _forward(self) -> None:
                proxy._link_up.wait()
                if proxy.gone:
                    self.close_connection = True
                    return
                if proxy.link is not None:
                    proxy.link.round_trip(new_connection=not self.answered)
                self.answered = True
                if proxy.range_delay and "Range" in self.headers:
                    time.sleep(proxy.range_delay)
                if self.command == "HEAD":
                    time.sleep(proxy.head_delay)
                time.sleep(sum(seconds for part, seconds in proxy.slow if part in self.path))
                fault = self._take_fault()
                if fault is not None and fault not in DAMAGE:
                    self._fail(fault)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                try:
                    self._relay(upstream, fault)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client went away (a killed daemon)
                finally:
                    upstream.close()

            def _take_fault(self) -> str | None:
                with proxy._lock:
                    found = next((f for f in proxy.faults if self._meets(*f)), None)
                    if found is not None:
                        proxy.faults.remove(found)
                if found is None:
                    return None
                proxy.fault_met(found[1], self.command, self.path)
                return found[1]

            def _meets(self, where: str, fault: str) -> bool:
                return where in self.path and (fault not in DAMAGE or self.command == "GET")

            def _fail(self, fault: str) -> None:
                if fault in ("reset", "stall"):
                    if fault == "stall":
                        with proxy._lock:
                            ended = proxy._stalls_ended
                        ended.wait(proxy.stall_seconds)
                    self.close_connection = True
                    return
                self.send_response(int(fault))
                if fault == "429":
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _send_body(self, body: bytes, damage: str | None, path: str) -> None:
                """Send ``body``, counting its bytes as they are written: a client that
                stops reading and closes (a stream stopped early) is counted for what
                crossed the link, as a network would carry it, not for what it asked."""

                def write(piece: bytes) -> None:
                    proxy._wait_for_link(path)
                    self.wfile.write(piece)
                    proxy._sent(path, len(piece))

                if damage == "trickle":
                    self._trickle(body, write)
                elif proxy.link is not None:
                    proxy.link.send(body, write)
                else:
                    for start in range(0, len(body), UNLIMITED_PIECE):
                        write(body[start : start + UNLIMITED_PIECE])

            def _trickle(self, body: bytes, write: Callable[[bytes], None]) -> None:
                """Send ``body`` at ``trickle_rate``, up to four pieces a second."""
                piece = max(1, int(proxy.trickle_rate / 4))
                limit = proxy.trickle_seconds
                give_up = None if limit is None else time.monotonic() + limit
                for start in range(0, len(body), piece):
                    if give_up is not None and time.monotonic() > give_up:
                        self.close_connection = True
                        return
                    write(body[start : start + piece])
                    self.wfile.flush()
                    time.sleep(piece / proxy.trickle_rate)

            def _relay(self, upstream: http.client.HTTPConnection, damage: str | None) -> None:
                headers = {k: v for k in FORWARDED if (v := self.headers.get(k)) is not None}
                if "Authorization" in headers:
                    proxy.authorization_seen.append(self.path)
                if proxy.ignore_range:
                    headers.pop("Range", None)
                if proxy.redirect_blobs_to and "/blobs/" in self.path and self.command == "GET":
                    self.send_response(307)
                    target = f"http://{proxy.redirect_blobs_to}{self.path}?X-Amz-Signature=s3cr3t"
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if proxy.path_prefix:
                    if not self.path.startswith(proxy.path_prefix + "/"):
                        self.send_response(404)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.path = self.path[len(proxy.path_prefix) :]
                upstream.request(self.command, self.path, headers=headers)
                response = upstream.getresponse()
                path = self.path.split("?")[0]
                is_blob = "/blobs/" in path and self.command == "GET"
                damage = damage or ("corrupt" if is_blob and proxy.corrupt else None)
                damage = damage or ("truncate" if is_blob and proxy.truncate else None)
                ranged = "Range" in headers
                if is_blob and ranged:
                    with proxy._lock:
                        proxy.blob_ranges.append((path, headers["Range"]))
                proxy._count(path, whole_blob=is_blob and not ranged, ranged=ranged)
                declared = response.getheader("Content-Length", "")
                if damage is None and self.command == "GET" and declared.isdigit():
                    self._headers(response, path, int(declared), close=False)
                    self._relay_body(response, int(declared), path)
                    return
                body = response.read()
                if damage == "corrupt" and body:  # a blob's middle: its read-ahead tail may
                    flipped = len(body) // 2 if is_blob else len(body) - 1  # go unread
                    body = body[:flipped] + bytes([body[flipped] ^ 0xFF]) + body[flipped + 1 :]
                length = len(body)
                if damage == "truncate":
                    body = body[: len(body) // 2]
                self._headers(response, path, length, close=damage == "truncate")
                if self.command != "HEAD":
                    self._send_body(body, damage, path)

            def _headers(
                self, response: http.client.HTTPResponse, path: str, length: int, *, close: bool
            ) -> None:
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                if "/blobs/" in path and proxy.blob_encoding:
                    self.send_header("Content-Encoding", proxy.blob_encoding)
                self.send_header("Content-Length", str(length))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()

            def _relay_body(
                self, response: http.client.HTTPResponse, length: int, path: str
            ) -> None:
                """The registry's body passed on as it comes, as a network would: a large
                answer's first bytes are not held until its last has come."""
                remaining = length
                while remaining > 0:
                    piece = response.read(min(RELAYED_PIECE, remaining))
                    if not piece:
                        self.close_connection = True  # the registry's answer broke off
                        return
                    remaining -= len(piece)
                    self._send_body(piece, None, path)

            def do_GET(self) -> None:
                self._forward()

            def do_HEAD(self) -> None:
                self._forward()

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
