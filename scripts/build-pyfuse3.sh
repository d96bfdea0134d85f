#!/usr/bin/env bash
# Builds pyfuse3 with regfs's kernel-caching patch (regfs/patches/pyfuse3-kernel-caching.patch)
# into build/pyfuse3/, once per patch: the wheel is version 3.5.0+regfs.<patch hash>, so
# `pip list` says which build is installed. Prints the wheel's path.
#
# The build is `regfs install-pyfuse3 --build-only` (regfs/commands/install_pyfuse3.py), the
# command users of a plain `pip install regfs` run. Needs libfuse3-dev, pkg-config, gcc,
# patch and python3-dev (scripts/install.sh installs them); pip fetches Cython and
# setuptools-scm for the build, as for any sdist.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
exec "$PYTHON" -m regfs install-pyfuse3 --build-only --wheel-dir build/pyfuse3
