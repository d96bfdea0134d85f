"""Mounting regfs through its CLI, as a user does, and checking its log afterwards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

from tests.support.installed import clean_environment
from tests.support.net import wait_until

PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback")
"""Log lines no test may leave behind unless it says it expects them."""
USER_CONFIGURATION = ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "DOCKER_CONFIG",
                      "REGISTRY_AUTH_FILE", "CONTAINERS_REGISTRIES_CONF")  # fmt: skip
"""Variables that point regfs at a user's files: a mount never sees the machine's own."""


class Installation:
    """Which ``regfs`` the tests run: the wheel's once ``use`` is called (the mount tests
    always do), else the one beside this interpreter (the benchmarks' default)."""

    bin_dir = Path(sys.executable).parent

    @classmethod
    def use(cls, bin_dir: Path) -> None:
        cls.bin_dir = bin_dir

    @classmethod
    def regfs(cls) -> Path:
        return cls.bin_dir / "regfs"


def run_regfs(
    *args: str, timeout: float = 30, environment: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``regfs ARGS…`` as a user types it, from the installation under test; ``environment``
    adds to (or, with an empty value, removes from) the tests' own."""
    env = clean_environment()
    for name, value in (environment or {}).items():
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    return subprocess.run(
        [str(Installation.regfs()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


class Mount:
    """``regfs mount`` at ``path`` (daemonized); ``close()`` unmounts it.

    Every mount's log is checked after each test (``unexpected_log_lines``): a WARNING,
    ERROR or traceback fails the test unless the test declared it with ``allow_log``.
    """

    live: ClassVar[list[Mount]] = []
    """Mounts whose logs still need checking."""

    def __init__(
        self, path: Path, *options: str, environment: dict[str, str] | None = None
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.log_file = path.with_name(path.name + ".log")
        if "--cache-dir" not in options:  # never the user's own cache
            options = (*options, "--cache-dir", str(path.with_name(path.name + ".cache")))
        self._checked_up_to = 0
        self._allowed: list[re.Pattern[str]] = []
        # A home of its own, so no file of the machine's user (auth.json, registries.conf,
        # certs.d) is read; a test that wants one passes HOME or a variable naming it.
        home = path.with_name(path.name + ".home")
        home.mkdir(exist_ok=True)
        isolated = {name: "" for name in USER_CONFIGURATION} | {"HOME": str(home)}
        isolated["XDG_RUNTIME_DIR"] = str(home / "run")  # unset: /run/containers/UID
        command = ("mount", str(path), "--log-file", str(self.log_file), *options)
        result = run_regfs(*command, environment=isolated | (environment or {}))
        if result.returncode != 0:
            raise RuntimeError(f"regfs mount failed: {result.stderr}")
        Mount.live.append(self)

    @classmethod
    def adopt(cls, path: Path, log_file: Path) -> Mount:
        """A mount the test made with its own ``regfs mount`` command line, logging to
        ``log_file``: checked and closed as the others."""
        mount = cls.__new__(cls)
        mount.path, mount.log_file = path, log_file
        mount._checked_up_to, mount._allowed = 0, []
        Mount.live.append(mount)
        return mount

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def allow_log(self, *patterns: str) -> None:
        """Lines matching any of ``patterns`` (regexes) may appear during this test."""
        self._allowed += [re.compile(pattern) for pattern in patterns]

    def unexpected_log_lines(self) -> list[str]:
        """WARNING/ERROR/traceback lines logged since the last check that no test allowed;
        then start a new check (allowances end with the test that made them)."""
        text = self.log()
        new, self._checked_up_to = text[self._checked_up_to :], len(text)
        allowed, self._allowed = self._allowed, []
        return [
            line
            for line in new.splitlines()
            if PROBLEM.search(line) and not any(pattern.search(line) for pattern in allowed)
        ]

    def pid(self) -> int:
        """The daemon serving this mount, found by its command line (``regfs mount PATH``)."""
        wanted = str(self.path).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # exited meanwhile
            if b"mount" in argv and wanted in argv and any(b"regfs" in a for a in argv[:2]):
                return int(entry.name)
        raise LookupError(f"no regfs daemon serves {self.path}")

    def close(self) -> None:
        if os.path.ismount(self.path) or _dead(self.path):
            result = run_regfs("umount", str(self.path))
            assert result.returncode == 0, result.stderr


def _dead(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:
        return True
    return False


def written(mount: Mount, line: str, times: int = 1) -> None:
    """Wait until ``mount``'s log says ``line`` ``times`` times: a layer's index is
    answered from memory once its tree is made, and the line that says where it was made
    from is logged once its file is written, behind."""
    wait_until(lambda: mount.log().count(line) >= times, 10, f"{line!r} in the log")
