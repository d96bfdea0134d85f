#!/usr/bin/env bash
# Runs the whole test suite: lint, types, unit, component and mount tests (real registry,
# real FUSE mounts: needs root and /dev/fuse). Installs whatever is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
echo "==> ruff"
.venv/bin/ruff check regfs tests scripts
.venv/bin/ruff format --check regfs tests scripts
echo "==> mypy"
.venv/bin/mypy
echo "==> pytest"
.venv/bin/pytest "$@"
