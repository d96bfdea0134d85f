"""Layers layer: reading layer blobs through per-layer indexes, verified.

- ``formats/``: pure parsers and codecs (tar, TOC, zTOC, zstd frames, inflation, merge);
- ``index/``: the per-layer SQLite index, its builders, its files in the cache dir;
- ``layer_store.py``: ``LayerStore``, which finds or builds a layer's index and serves its
  bytes, each piece checked.

Imports regfs.domain, regfs.cache and regfs.registry; never pyfuse3. ``sqlite3`` is used
only in ``index/`` (``layer_index.py`` reads, ``write.py`` writes).
"""
