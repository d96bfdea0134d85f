"""Inflating a gzip layer from a checkpoint in the middle of a deflate stream.

Layers layer, blocking (CPU only: run it in a worker thread). A checkpoint at a deflate
block boundary rarely falls on a byte boundary: the block starts ``bits`` bits before the
byte at the checkpoint. zlib takes those bits with ``inflatePrime``, which Python's zlib
module does not expose (shifting the bytes instead breaks at stored blocks, which restart
on the original byte boundaries), so this calls the system's libz through ctypes, as
SOCI's reader does in C. Bounded: at most ``size`` bytes come out.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from regfs.domain.errors import MalformedContent

_Z_OK = 0
_Z_STREAM_END = 1
_Z_BUF_ERROR = -5
_Z_NO_FLUSH = 0
_RAW_DEFLATE = -15
_GZIP_HEADER = 47  # 32 (detect gzip or zlib) + 15 (a 32 KiB window)
_GZIP_TRAILER = 8


class _ZStream(ctypes.Structure):
    """zlib's ``z_stream``, as zlib.h declares it."""

    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


def _load_zlib() -> ctypes.CDLL:
    library = ctypes.CDLL(ctypes.util.find_library("z") or "libz.so.1")
    library.zlibVersion.restype = ctypes.c_char_p
    stream = ctypes.POINTER(_ZStream)
    library.inflateInit2_.argtypes = [stream, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    library.inflatePrime.argtypes = [stream, ctypes.c_int, ctypes.c_int]
    library.inflateSetDictionary.argtypes = [stream, ctypes.c_char_p, ctypes.c_uint]
    library.inflate.argtypes = [stream, ctypes.c_int]
    library.inflateReset2.argtypes = [stream, ctypes.c_int]
    library.inflateEnd.argtypes = [stream]
    return library


_zlib = _load_zlib()


def inflate_from_checkpoint(compressed: bytes, bits: int, window: bytes, size: int) -> bytes:
    """Up to ``size`` bytes inflated from ``compressed``, which starts at a checkpoint: with
    ``bits`` set, its first byte's top ``bits`` bits begin the next block. ``window`` is the
    output before the checkpoint. Gzip members that follow are inflated on (their headers
    and trailers skipped), as a gzip reader would."""
    stream = _ZStream()
    _check(stream, _zlib.inflateInit2_(ctypes.byref(stream), _RAW_DEFLATE, _zlib.zlibVersion(),
                                       ctypes.sizeof(_ZStream)))  # fmt: skip
    try:
        data = compressed
        if bits:
            _check(stream, _zlib.inflatePrime(ctypes.byref(stream), bits, data[0] >> (8 - bits)))
            data = data[1:]
        _check(stream, _zlib.inflateSetDictionary(ctypes.byref(stream), window, len(window)))
        source = ctypes.create_string_buffer(data, len(data))
        output = ctypes.create_string_buffer(size)
        stream.next_in, stream.avail_in = ctypes.addressof(source), len(data)
        stream.next_out, stream.avail_out = ctypes.addressof(output), size
        raw = True
        while stream.avail_out:
            status = _zlib.inflate(ctypes.byref(stream), _Z_NO_FLUSH)
            if status == _Z_STREAM_END:
                if stream.avail_in <= (_GZIP_TRAILER if raw else 0):
                    break
                if raw:  # the raw member's trailer; later ones are read in gzip mode
                    stream.next_in += _GZIP_TRAILER
                    stream.avail_in -= _GZIP_TRAILER
                    raw = False
                _check(stream, _zlib.inflateReset2(ctypes.byref(stream), _GZIP_HEADER))
            elif status == _Z_BUF_ERROR:
                break  # the input ends here
            else:
                _check(stream, status)
        return output.raw[: size - stream.avail_out]
    finally:
        _zlib.inflateEnd(ctypes.byref(stream))


def _check(stream: _ZStream, status: int) -> None:
    if status != _Z_OK:
        message = stream.msg.decode("utf-8", "replace") if stream.msg else f"zlib error {status}"
        raise MalformedContent(f"cannot inflate from the checkpoint: {message}")
