"""The first pass over a whole gzip blob: its bytes in order, and checkpoints on the way.

Formats layer, blocking (CPU: run it in a worker thread). A gzip layer read whole must
be inflated whole once; where inflation can restart later is found on the way, as zlib's
own zran.c example does: ``inflate`` runs with ``Z_BLOCK``, so it returns at the end of
each deflate block, and where one ends ``spacing`` bytes of output or more after the last
checkpoint, the compressed offset, the bits of the byte before it that begin the next
block and the 32 KiB of output before it (``inflateGetDictionary``) make a checkpoint.
indexed_gzip did this at half libz's own speed (a 170 MB Debian tar: 0.84 s against
0.44 s). The first ``head`` bytes of output after each checkpoint are kept, so that
``gzip_points.restartable`` can try each without inflating the stream again.
Concatenated gzip members are read on (gzip only: a zlib stream after a member is
refused, as Go's and Python's gzip readers refuse it); zero bytes after the last are
padding (as GNU gzip allows).
"""

from __future__ import annotations

import ctypes
from typing import Protocol

from regfs.domain.errors import MalformedContent
from regfs.layers.formats.libz import (
    GZIP_ONLY,
    Z_BLOCK,
    Z_BUF_ERROR,
    Z_OK,
    Z_STREAM_END,
    ZStream,
    check,
    inflate_init,
    zlib,
)
from regfs.layers.formats.ztoc import WINDOW_SIZE, Checkpoint

INPUT_SIZE = 1 << 20
"""Compressed bytes read from the blob at a time."""
_WHAT = "inflate the gzip stream"
_END_OF_BLOCK = 128
"""In ``data_type`` after ``Z_BLOCK``: inflate stopped at a block's end (or a header's)."""
_LAST_BLOCK = 64
"""In ``data_type``: the block being read is its member's last."""
_UNUSED_BITS = 7


class GzipDataError(ValueError):
    """The blob is not one whole gzip stream (a decompression error, as zlib's are)."""


class ReadsInto(Protocol):
    """A binary file, read into a buffer (``typing.BinaryIO`` does not declare it)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class GzipScanner:
    """Sequential reads of a gzip blob (``read``); ``points`` holds the checkpoints met so
    far, and ``heads`` what follows each, up to ``head`` bytes."""

    def __init__(self, blob: ReadsInto, *, spacing: int, head: int) -> None:
        self._blob = blob
        self._spacing = spacing
        self._head = head
        self._stream = ZStream()
        inflate_init(self._stream, GZIP_ONLY, _WHAT)  # fails only out of memory
        self._input = (ctypes.c_char * INPUT_SIZE)()
        self._input_bytes = memoryview(self._input).cast("B")
        self._input_length = 0
        self._output_buffer = ctypes.create_string_buffer(0)
        self._consumed_before = 0
        """Compressed bytes before the current input piece."""
        self._output = 0
        """Bytes of output so far."""
        self._ended = False
        self._closed = False
        self._window = ctypes.create_string_buffer(WINDOW_SIZE)
        self._window_length = ctypes.c_uint()
        self.points: list[Checkpoint] = []
        self.heads: dict[int, bytes] = {}
        self._filling: dict[int, bytearray] = {0: bytearray()}
        """Heads not complete yet, by their checkpoint's offset of output."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes of output (at least one, unless the stream has ended)."""
        if size < 0:
            raise ValueError("a gzip scan reads in pieces of a given size")
        stream = self._stream
        if len(self._output_buffer) < size:
            self._output_buffer = ctypes.create_string_buffer(size)
        output = self._output_buffer
        stream.next_out, stream.avail_out = ctypes.addressof(output), size
        start = self._output
        while stream.avail_out and not self._ended:
            if not stream.avail_in and not self._feed():
                raise GzipDataError("the gzip stream is cut short")
            status = zlib.inflate(ctypes.byref(stream), Z_BLOCK)
            self._output = start + size - stream.avail_out
            if status == Z_STREAM_END:
                self._next_member()
            elif status == Z_OK:
                flags = stream.data_type
                if flags & _END_OF_BLOCK and not flags & _LAST_BLOCK:
                    self._block_end()
            elif status != Z_BUF_ERROR or (stream.avail_in and stream.avail_out):
                self._check(status)  # Z_BUF_ERROR: more input is needed, fed above
        data = ctypes.string_at(output, size - stream.avail_out)
        self._keep_heads(start, data)
        return data

    def close(self) -> None:
        """Free libz's state (idempotent)."""
        if not self._closed:
            self._closed = True
            zlib.inflateEnd(ctypes.byref(self._stream))

    def _check(self, status: int) -> None:
        try:
            check(self._stream, status, _WHAT)
        except MalformedContent as error:
            raise GzipDataError(str(error)) from None

    def _feed(self) -> bool:
        """Hand libz the blob's next bytes (read into its input buffer: no copy); False at
        the blob's end."""
        self._consumed_before += self._input_length
        self._input_length = self._blob.readinto(self._input_bytes) or 0
        if not self._input_length:
            return False
        self._stream.next_in = ctypes.addressof(self._input)
        self._stream.avail_in = self._input_length
        return True

    def _compressed_position(self) -> int:
        return self._consumed_before + self._input_length - int(self._stream.avail_in)

    def _block_end(self) -> None:
        """A checkpoint here if ``spacing`` bytes of output came since the last one."""
        last = self.points[-1].uncompressed if self.points else 0
        if self._output == 0 or self._output < last + self._spacing:
            return
        stream = self._stream
        self._check(zlib.inflateGetDictionary(ctypes.byref(stream), self._window,
                                              ctypes.byref(self._window_length)))  # fmt: skip
        length = self._window_length.value
        window = bytes(WINDOW_SIZE - length) + self._window.raw[:length]
        bits = stream.data_type & _UNUSED_BITS
        self.points.append(Checkpoint(self._compressed_position(), self._output, bits, window))
        self._filling[self._output] = bytearray()

    def _next_member(self) -> None:
        """After a member's trailer: another member follows, or zero bytes to the blob's
        end, or nothing (zeros between members would stop Go's gzip reader, and
        ``inflate_from_checkpoint``: refused)."""
        stream = self._stream
        padded = False
        while True:
            position = self._input_length - stream.avail_in
            if stream.avail_in and self._input_bytes[position] == 0:  # rare: copy the rest
                rest = bytes(self._input_bytes[position : self._input_length])
                padding = len(rest) - len(rest.lstrip(b"\0"))
                stream.next_in += padding
                stream.avail_in -= padding
                padded = True
            if stream.avail_in:
                if padded:
                    raise GzipDataError("zero bytes between gzip members")
                self._check(zlib.inflateReset(ctypes.byref(stream)))  # gzip only, still
                return
            if not self._feed():
                self._ended = True
                return

    def _keep_heads(self, start: int, data: bytes) -> None:
        """Append to each head not complete yet what ``data`` (output from ``start``) holds
        of it."""
        for offset, head in list(self._filling.items()):
            begin = offset + len(head) - start  # heads are filled up to ``start``
            head.extend(data[begin : begin + self._head - len(head)])
            if len(head) >= self._head or self._ended:
                self.heads[offset] = bytes(head)
                del self._filling[offset]


class RecordedHeads:
    """The output after each checkpoint of a scan, seekable to those offsets only (what
    ``gzip_points.restartable`` reads to try each)."""

    def __init__(self, heads: dict[int, bytes]) -> None:
        self._heads = heads
        self._left = b""

    def seek(self, offset: int, /) -> int:
        if offset not in self._heads:
            raise MalformedContent(f"no output was kept after {offset}")
        self._left = self._heads[offset]
        return offset

    def read(self, size: int = -1, /) -> bytes:
        data = self._left if size < 0 else self._left[:size]
        self._left = self._left[len(data) :]
        return data
