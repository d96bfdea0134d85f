"""Cache layer: single-flight and (later) the on-disk chunk cache. Imports regfs.domain only."""
