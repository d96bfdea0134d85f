"""Layers layer: tar parsing, per-layer indexes, decompression checkpoints, blob reading.

Imports regfs.domain, regfs.cache and regfs.registry; never pyfuse3. ``sqlite3`` is used
only in ``store.py``.
"""
