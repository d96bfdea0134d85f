"""Tree layer: the namespace (root → host → repository → tag → image) as nodes.

Imports regfs.domain, regfs.cache and regfs.registry; never pyfuse3.
"""
