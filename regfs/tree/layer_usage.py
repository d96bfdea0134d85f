"""Which layers of a layer store podman uses: its reference counting, counted.

Tree layer: pure bookkeeping, no IO. containers/storage creates ``use`` in a layer dir
when it starts using a layer (on pull, and again when it makes its own record of it) and
removes the layer dir (``rmdir``) when it stops (after a pull, on ``rmi``); a store that
counts answers ENOENT to both. Nothing is evicted by these counts: they are what
``regfs status`` shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class LayerUsage:
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    """Uses by (image reference, layer digest)."""

    def use(self, reference: str, layer: str) -> int:
        key = (reference, layer)
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]

    def release(self, reference: str, layer: str) -> int:
        """One use fewer (never below none): a release of a layer not counted (used before
        this mount started) is not an error."""
        key = (reference, layer)
        left = self.counts.pop(key, 0) - 1
        if left > 0:
            self.counts[key] = left
        return max(left, 0)

    def references(self) -> list[str]:
        """The image references with a layer in use, sorted."""
        return sorted({reference for reference, _ in self.counts})

    def in_use(self) -> list[dict[str, object]]:
        """What ``regfs status`` shows: each layer in use, by reference."""
        return [
            {"reference": reference, "layer": layer, "uses": uses}
            for (reference, layer), uses in sorted(self.counts.items())
        ]
