"""Pure parsers and codecs of layer formats: tar, eStargz and zstd:chunked TOCs, SOCI zTOCs
(FlatBuffers), zstd frames, inflation from a checkpoint, the tar → tree rules and the
whiteout merge. No network and no cache: what they read is handed to them."""
