"""``regfs install-pyfuse3`` without building: the patch it applies is the package's own, a
wheel already built for it is reused, and a machine without the build tools is told what
to install (the build itself runs in scripts/build-pyfuse3.sh and the mount tests)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from regfs.commands import install_pyfuse3
from regfs.commands.parser import build_parser


def test_the_patches_ship_with_the_package_and_name_the_build() -> None:
    patches = install_pyfuse3.patches()
    assert len(patches) == 2
    assert all(b"\n--- a/" in patch for patch in patches)
    version = install_pyfuse3.local_version(patches)
    assert re.fullmatch(r"3\.5\.0\+regfs\.[0-9a-f]{12}", version)
    assert install_pyfuse3.local_version(patches[:1]) != version  # each patch counts


def test_a_wheel_built_for_this_patch_is_reused(tmp_path: Path) -> None:
    version = install_pyfuse3.local_version(install_pyfuse3.patches())
    wheel = tmp_path / f"pyfuse3-{version}-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"")
    (tmp_path / "pyfuse3-3.5.0+regfs.000000000000-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    assert install_pyfuse3.built_wheel(tmp_path) == wheel


def test_missing_build_tools_are_named_with_their_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    args = build_parser().parse_args(["install-pyfuse3", "--wheel-dir", str(tmp_path)])
    assert install_pyfuse3.run(args) == 1
    error = capsys.readouterr().err
    assert "needs pkg-config, cc, patch, tar" in error
    assert install_pyfuse3.DEBIAN_PACKAGES in error
    assert list(tmp_path.iterdir()) == []
