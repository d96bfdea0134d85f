"""The system's libz through ctypes, for what Python's zlib module does not expose.

Formats layer. Inflating from a checkpoint needs ``inflatePrime`` (``inflate.py``); a
first pass that records checkpoints needs ``inflate`` to stop at each deflate block's
end (``Z_BLOCK``) and ``inflateGetDictionary`` (``gzip_scan.py``). Both are zlib's C API,
which Python's zlib module wraps only in part; this binds the few functions they use.
ctypes gives up the GIL for each call, so inflation runs beside the event loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from regfs.domain.errors import MalformedContent

Z_OK = 0
Z_STREAM_END = 1
Z_BUF_ERROR = -5
Z_NO_FLUSH = 0
Z_BLOCK = 5
"""``inflate`` returns at the end of each deflate block (and after a gzip header)."""
RAW_DEFLATE = -15
GZIP_HEADER = 47
"""Window bits: 32 (a gzip or zlib header, detected) + 15 (a 32 KiB window)."""
GZIP_ONLY = 31
"""Window bits: 16 (a gzip header, nothing else) + 15 (a 32 KiB window)."""
GZIP_TRAILER = 8


class ZStream(ctypes.Structure):
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


def _load() -> ctypes.CDLL:
    library = ctypes.CDLL(ctypes.util.find_library("z") or "libz.so.1")
    library.zlibVersion.restype = ctypes.c_char_p
    stream = ctypes.POINTER(ZStream)
    library.inflateInit2_.argtypes = [stream, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    library.inflatePrime.argtypes = [stream, ctypes.c_int, ctypes.c_int]
    library.inflateSetDictionary.argtypes = [stream, ctypes.c_char_p, ctypes.c_uint]
    library.inflateGetDictionary.argtypes = [stream, ctypes.c_char_p,
                                             ctypes.POINTER(ctypes.c_uint)]  # fmt: skip
    library.inflate.argtypes = [stream, ctypes.c_int]
    library.inflateReset.argtypes = [stream]
    library.inflateReset2.argtypes = [stream, ctypes.c_int]
    library.inflateEnd.argtypes = [stream]
    return library


zlib = _load()


def inflate_init(stream: ZStream, window_bits: int, what: str) -> None:
    """``inflateInit2`` of ``stream``; ``what`` names the inflation in an error."""
    check(stream, zlib.inflateInit2_(ctypes.byref(stream), window_bits, zlib.zlibVersion(),
                                     ctypes.sizeof(ZStream)), what)  # fmt: skip


def check(stream: ZStream, status: int, what: str) -> None:
    """Raise ``MalformedContent`` (``cannot <what>: <zlib's message>``) unless ``Z_OK``."""
    if status != Z_OK:
        message = stream.msg.decode("utf-8", "replace") if stream.msg else f"zlib error {status}"
        raise MalformedContent(f"cannot {what}: {message}")
