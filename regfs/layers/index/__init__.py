"""The per-layer SQLite index: its schema, its builders, where its files live in the cache
dir and what each must say of itself to be used."""
