"""What a cache dir holds, and where: the one place that names its parts.

Cache layer, pure: paths only. Mounts, ``regfs prefetch`` and ``regfs cache`` share a
cache dir, so they must agree on where each thing lives; each takes its paths from here.

- ``chunks/ab/abcd…``: verified pieces of layers, named by their sha256 (``chunks.py``);
- ``indexes/``: one SQLite index per layer and kind (``layers/index/files.py`` names them),
  and ``<layer>.blob-pieces``, the hashes of a blob's own pieces (``compressed_blob.py``);
- ``verdicts/<index>.disagrees``: TOCs found to disagree with their tar (never evicted);
- ``images/<layer digest>``: which images each layer was used for (``layer_images.py``);
- ``tmp/``: blobs being downloaded and re-fetches spooled, removed when their writer dies;
- ``locks/``: one lock file per layer being downloaded (``locks.py``);
- ``confirmed/``: which repositories a registry said hold which digests (``confirmations.py``);
- ``answers/``: the last good answer to each catalog, tag list and tag (``answers.py``);
- ``pins/``: the images kept out of eviction, one record each (``pins.py``).

Manifests (image indexes too), configs and SOCI indexes are kept in ``chunks/`` as well, named
by their sha256: they count against the bound and are evicted like chunks.

Chunks, indexes, answers and confirmations count against ``--cache-size`` and are evicted
least recently used first, except those a pin names; what is in ``tmp/`` counts but is
not evicted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CacheLayout:
    root: Path

    @property
    def chunks(self) -> Path:
        return self.root / "chunks"

    @property
    def indexes(self) -> Path:
        return self.root / "indexes"

    @property
    def verdicts(self) -> Path:
        return self.root / "verdicts"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def temporary(self) -> Path:
        return self.root / "tmp"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def confirmations(self) -> Path:
        return self.root / "confirmed"

    @property
    def answers(self) -> Path:
        return self.root / "answers"

    @property
    def pins(self) -> Path:
        return self.root / "pins"

    def parts(self) -> dict[str, Path]:
        """Every part by the name ``regfs cache stats`` gives it."""
        return {
            "chunks": self.chunks,
            "indexes": self.indexes,
            "verdicts": self.verdicts,
            "images": self.images,
            "temporary": self.temporary,
            "locks": self.locks,
            "confirmations": self.confirmations,
            "answers": self.answers,
            "pins": self.pins,
        }

    def blob_pieces(self, layer_dir_name: str) -> Path:
        """The hashes of the pieces of a layer's compressed blob (``sha256-<hex>``)."""
        return self.indexes / f"{layer_dir_name}.blob-pieces"

    def verdict_for(self, index: Path) -> Path:
        """Where the verdict that a TOC disagrees with its tar is kept, for its index."""
        return self.verdicts / f"{index.stem}.disagrees"
