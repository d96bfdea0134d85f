-- regfs layer index: one SQLite file per layer blob, named after the blob's digest.
-- Written once, after the whole blob was verified against its digest, and then only read
-- (opened with immutable=1). A file whose schema_version differs from SCHEMA_VERSION in
-- meta.py is rebuilt from the blob.
-- History: 4 added meta built_from (what the index was made from, checked on open);
-- 5 gave gzip checkpoints their windows in span_starts (a re-fetch is one Range request
-- and one inflation), zstd chunks the compressed offset their output needs, and dropped
-- the blobs table (indexed_gzip's exported index).
-- A new version deletes every cached index on its first open (each is built again), and
-- a plain layer's needs its blob again, which a cache used offline cannot fetch: the
-- tar -> tree rules that changed on 2026-12-07 (a whiteout hides lower layers only, a
-- dir made over a non-dir of its own layer is opaque, header-only members, pre-POSIX
-- "name/" dirs, clamped dates; aufs metadata not shown) changed only odd or hostile
-- layers, so they came without one: an index made before shows its layer by the old rules
-- until it is built again.
-- A new version must also name its files apart (files.py): a cache shared by two regfs
-- versions (a mount left running across an upgrade) would otherwise have each delete the
-- other's files on open, and build them again, over and over.
-- Each file ends with a seal (the sha256 of its pages, seal.py), after the pages SQLite
-- reads; files written before seals have none and are used unchecked.

-- Facts about the blob and its uncompressed tar stream.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,  -- schema_version, digest, compression, compressed_size,
                             -- uncompressed_size, chunk_size, prefetch_end, built_from
                             -- (blob, toc <annotations hash>, ztoc <digest>: checked on
                             -- open against the layer asked for, see store.ExpectedIndex)
    value TEXT NOT NULL
);

-- One row per name in the layer's tree (overlay form: whiteouts are rows of kind 7).
CREATE TABLE entries (
    id          INTEGER PRIMARY KEY,  -- 1 is the layer root; parents have smaller ids
    parent      INTEGER NOT NULL,     -- id of the containing directory (0 for the root)
    name        BLOB NOT NULL,        -- one path component, raw bytes as in the tar
    kind        INTEGER NOT NULL,     -- EntryKind: 1 file, 2 dir, 3 symlink, 4 char, 5 block,
                                      -- 6 fifo, 7 whiteout
    mode        INTEGER NOT NULL,     -- permission, setuid/setgid and sticky bits (07777)
    uid         INTEGER NOT NULL,
    gid         INTEGER NOT NULL,
    size        INTEGER NOT NULL,     -- file size in bytes (0 for other kinds)
    mtime_ns    INTEGER NOT NULL,
    target      BLOB NOT NULL,        -- symlink target exactly as stored (never resolved)
    data_offset INTEGER NOT NULL,     -- where file data starts in the uncompressed tar
    link        INTEGER NOT NULL,     -- hard links: id of the first name of this inode, else 0
    nlink       INTEGER NOT NULL,     -- names this inode has within the layer
    rdev_major  INTEGER NOT NULL,     -- device numbers for kinds 4 and 5
    rdev_minor  INTEGER NOT NULL,
    opaque      INTEGER NOT NULL,     -- 1: the directory had .wh..wh..opq (hides lower layers)
    implicit    INTEGER NOT NULL,     -- 1: directory absent from the tar, made for a child
    xattrs      BLOB NOT NULL         -- extended attributes, encoded by store.encode_xattrs
);
CREATE UNIQUE INDEX entries_by_name ON entries (parent, name);
CREATE INDEX entries_by_link ON entries (link) WHERE link != 0;

-- sha256 of each fixed-size chunk of the uncompressed tar, recorded during the verified
-- pass; a chunk fetched or read again later must hash to this.
CREATE TABLE chunks (
    idx            INTEGER PRIMARY KEY,  -- covers [idx * chunk_size, (idx+1) * chunk_size)
    sha256         BLOB NOT NULL,
    compressed_end INTEGER NOT NULL      -- zstd: the blob up to here makes this chunk
                                         -- (from the checkpoint before it); else 0
);

-- Random-access points, at least 2 MiB (gzip) or 1 MiB (zstd) of output apart:
-- decompression can restart at compressed_offset and produce the stream from
-- uncompressed_offset on (gzip: with the bits and window in span_starts, the point checked
-- to restart inflation when the index was built; zstd: a frame starts there).
CREATE TABLE checkpoints (
    uncompressed_offset INTEGER PRIMARY KEY,
    compressed_offset   INTEGER NOT NULL
);

-- eStargz layers (compression 'estargz'): their files are laid end to end on a virtual
-- stream (entries.data_offset points into it), each piece being the start of one gzip
-- member of the blob, checked against the sha256 its TOC records.
CREATE TABLE toc_chunks (
    virtual_offset    INTEGER PRIMARY KEY,
    size              INTEGER NOT NULL,
    compressed_offset INTEGER NOT NULL,
    compressed_end    INTEGER NOT NULL,  -- where the next member (or the TOC) starts
    sha256            BLOB NOT NULL
);

-- How inflation restarts at a gzip checkpoint, or at a span of a layer read through a
-- SOCI zTOC (compression 'soci': toc_chunks holds its spans, data offsets are the tar's
-- own, sha256 that of the span's compressed bytes): the top `bits` bits of the first
-- compressed byte start the deflate block, and `window` is the 32 KiB of output before it.
CREATE TABLE span_starts (
    uncompressed_offset INTEGER PRIMARY KEY,
    bits                INTEGER NOT NULL,
    window              BLOB NOT NULL  -- zlib-compressed (a decompression bomb's are zeros)
);
