#!/usr/bin/env bash
# Builds pyfuse3 with regfs's kernel-caching patch (patches/pyfuse3-kernel-caching.patch)
# into build/pyfuse3/, once per patch: the wheel is version 3.5.0+regfs.<patch hash>, so
# `pip list` says which build is installed. Prints the wheel's path.
#
# Needs libfuse3-dev, pkg-config, gcc and python3-dev (scripts/install.sh installs them);
# pip fetches Cython and setuptools-scm for the build, as for any sdist.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=3.5.0
SDIST_SHA256=88399a9494b88603230bba300f4ba9ad63fece5ed514ca3633d555a0c6a42b24
PATCH=patches/pyfuse3-kernel-caching.patch
PYTHON=${PYTHON:-.venv/bin/python}
OUT=build/pyfuse3

label=$(sha256sum "$PATCH" | cut -c1-12)
wheel=$(ls "$OUT"/pyfuse3-"$VERSION"+regfs."$label"-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$wheel" ]; then
    echo "$wheel"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip=("$PYTHON" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" download --no-binary :all: --no-deps --dest "$work" "pyfuse3==$VERSION" >&2
echo "$SDIST_SHA256  $work/pyfuse3-$VERSION.tar.gz" | sha256sum --check --quiet
tar -xzf "$work/pyfuse3-$VERSION.tar.gz" -C "$work"
source_dir="$work/pyfuse3-$VERSION"
patch --quiet -p1 -d "$source_dir" < "$PATCH"
rm -f "$source_dir/src/pyfuse3/__init__.c"  # generated from the patched .pyx, not the stale one
mkdir -p "$OUT"
rm -f "$OUT"/pyfuse3-*.whl
SETUPTOOLS_SCM_PRETEND_VERSION="$VERSION+regfs.$label" \
    "${pip[@]}" wheel --no-deps --wheel-dir "$OUT" "$source_dir" >&2
ls "$OUT"/pyfuse3-"$VERSION"+regfs."$label"-*.whl
