"""Registry layer: the only user of httpx. Imports regfs.domain only."""
