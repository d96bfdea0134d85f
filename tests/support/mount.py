"""Mounting regfs through its CLI, as a user does, and reading its log afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REGFS = Path(sys.executable).with_name("regfs")


class Mount:
    """``regfs mount`` at ``path`` (daemonized); ``close()`` unmounts and returns the log."""

    def __init__(self, path: Path, *options: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.log_file = path.with_name(path.name + ".log")
        if "--cache-dir" not in options:  # never the user's own cache
            options = (*options, "--cache-dir", str(path.with_name(path.name + ".cache")))
        result = subprocess.run(
            [REGFS, "mount", str(path), "--log-file", str(self.log_file), *options],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"regfs mount failed: {result.stderr}")

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def close(self) -> None:
        if os.path.ismount(self.path) or _dead(self.path):
            subprocess.run([REGFS, "umount", str(self.path)], check=True, timeout=30)


def _dead(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:
        return True
    return False
