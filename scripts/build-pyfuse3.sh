#!/usr/bin/env bash
# Builds pyfuse3 with regfs's patches (regfs/patches/: kernel caching, and its version taken
# without importlib.metadata) into build/pyfuse3/, once per set of patches: the wheel is
# version 3.5.0+regfs.<patches' hash>, so `pip list` says which build is installed. Prints
# the wheel's path.
#
# The build is `regfs install-pyfuse3 --build-only` (regfs/commands/install_pyfuse3.py), the
# command users of a plain `pip install regfs` run. Needs libfuse3-dev, pkg-config, gcc,
# patch and python3-dev (scripts/install.sh installs them); pip fetches Cython and
# setuptools-scm for the build, as for any sdist.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
exec "$PYTHON" -m regfs install-pyfuse3 --build-only --wheel-dir build/pyfuse3
