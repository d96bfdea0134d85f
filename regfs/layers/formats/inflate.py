"""Inflating a gzip layer from a checkpoint in the middle of a deflate stream.

Layers layer, blocking (CPU only: run it in a worker thread). A checkpoint at a deflate
block boundary rarely falls on a byte boundary: the block starts ``bits`` bits before the
byte at the checkpoint. zlib takes those bits with ``inflatePrime``, which Python's zlib
module does not expose (shifting the bytes instead breaks at stored blocks, which restart
on the original byte boundaries), so this calls the system's libz through ctypes
(``libz.py``), as SOCI's reader does in C. Bounded: at most ``size`` bytes come out.
"""

from __future__ import annotations

import ctypes

from regfs.layers.formats.libz import (
    GZIP_HEADER,
    GZIP_TRAILER,
    RAW_DEFLATE,
    Z_BUF_ERROR,
    Z_NO_FLUSH,
    Z_STREAM_END,
    ZStream,
    check,
    inflate_init,
    zlib,
)

_WHAT = "inflate from the checkpoint"


def inflate_from_checkpoint(compressed: bytes, bits: int, window: bytes, size: int) -> bytes:
    """Up to ``size`` bytes inflated from ``compressed``, which starts at a checkpoint: with
    ``bits`` set, its first byte's top ``bits`` bits begin the next block. ``window`` is the
    output before the checkpoint. Gzip members that follow are inflated on (their headers
    and trailers skipped), as a gzip reader would."""
    stream = ZStream()
    inflate_init(stream, RAW_DEFLATE, _WHAT)
    try:
        data = compressed
        if bits:
            primed = zlib.inflatePrime(ctypes.byref(stream), bits, data[0] >> (8 - bits))
            check(stream, primed, _WHAT)
            data = data[1:]
        check(stream, zlib.inflateSetDictionary(ctypes.byref(stream), window, len(window)), _WHAT)
        source = ctypes.create_string_buffer(data, len(data))
        output = ctypes.create_string_buffer(size)
        stream.next_in, stream.avail_in = ctypes.addressof(source), len(data)
        stream.next_out, stream.avail_out = ctypes.addressof(output), size
        raw = True
        while stream.avail_out:
            status = zlib.inflate(ctypes.byref(stream), Z_NO_FLUSH)
            if status == Z_STREAM_END:
                if stream.avail_in <= (GZIP_TRAILER if raw else 0):
                    break
                if raw:  # the raw member's trailer; later ones are read in gzip mode
                    stream.next_in += GZIP_TRAILER
                    stream.avail_in -= GZIP_TRAILER
                    raw = False
                check(stream, zlib.inflateReset2(ctypes.byref(stream), GZIP_HEADER), _WHAT)
            elif status == Z_BUF_ERROR:
                break  # the input ends here
            else:
                check(stream, status, _WHAT)
        return output.raw[: size - stream.avail_out]
    finally:
        zlib.inflateEnd(ctypes.byref(stream))
