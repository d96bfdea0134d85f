"""FUSE layer: the pyfuse3 adapter. Translates between the kernel and regfs.tree."""
