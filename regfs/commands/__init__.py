"""The commands of ``regfs``, one module each: the application layer.

Commands wire the layers below together (``fuse``, ``tree``, ``layers``, ``cache``,
``registry``, ``domain``); nothing below imports this package or ``regfs.cli``, which only
parses the arguments and hands them to a command here.
"""
