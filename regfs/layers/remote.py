"""A read-only, seekable file whose bytes come from ranged requests for a blob.

Layers layer. For worker threads: decompressors (indexed_gzip, zstandard) read it like a
local file while each missing block is fetched through ``fetch(start, end)``. Blocks are
read ahead so a sequential reader sends one request per ``block_size``, not per read.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable

import trio


def fetch_in_task(fetch: Callable[[int, int], Awaitable[bytes]]) -> Callable[[int, int], bytes]:
    """A blocking ``fetch`` for a worker thread started by ``trio.to_thread.run_sync``.

    Each call runs ``fetch`` in the task that started the thread (not a system task), so
    that task's cancellation (its deadline, the unmount) reaches the thread at its next
    fetch, which raises: the thread ends with the read that wanted it.
    """

    def blocking(start: int, end: int) -> bytes:
        return trio.from_thread.run(fetch, start, end)

    return blocking


class RemoteFile(io.RawIOBase):
    def __init__(
        self, fetch: Callable[[int, int], bytes], size: int, block_size: int = 1 << 20
    ) -> None:
        super().__init__()
        self._fetch = fetch
        self._size = size
        self._block_size = block_size
        self._position = 0
        self._block_start = 0
        self._block = b""
        self.fetched = 0
        """Bytes requested from the registry so far."""
        self.error: Exception | None = None
        """The last fetch failure: C decompressors report it only as a generic read error."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            size = self._size - self._position
        size = min(size, self._size - self._position)
        if size <= 0:
            return b""
        offset = self._position - self._block_start
        if not 0 <= offset < len(self._block):
            end = min(self._size, self._position + max(size, self._block_size))
            try:
                self._block = self._fetch(self._position, end)
            except Exception as error:
                self.error = error
                raise
            self._block_start = self._position
            self.fetched += len(self._block)
            offset = 0
        data = self._block[offset : offset + size]
        self._position += len(data)
        return data
