#!/usr/bin/env bash
# Installs what regfs and its tests need on a Debian/Ubuntu machine, idempotently:
# Debian packages (FUSE, the registry, skopeo, umoci, podman), a venv in .venv, and regfs itself.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    fuse3 libfuse3-dev pkg-config gcc patch python3-dev python3-venv  # pyfuse3 builds against libfuse3
    docker-registry skopeo umoci                                # the real registry and image tools
    mmdebstrap systemd-container                                # test images; nspawn into rootfs/
    containerd stargz-snapshotter                               # eStargz test images (ctr-remote)
    podman                                                      # runs containers from a layer store
    attr curl ca-certificates                                   # getfattr for the demo
)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> apt-get install ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
# Debian's docker-registry package starts a registry on :5000 where systemd runs; regfs
# does not need it (the demo and tests start their own on free ports).

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "regfs needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.regfs-installed
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
    echo "==> pip install -e .[test]"
    .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
    cp pyproject.toml "$stamp"
fi
# pyfuse3 with regfs's patches (see regfs/patches/): without them regfs still works, with
# every open and directory listing reaching the daemon, and a slower start.
pyfuse3_wheel=$(scripts/build-pyfuse3.sh)
pyfuse3_version=$(basename "$pyfuse3_wheel" | cut -d- -f2)
if ! .venv/bin/python -m pip show pyfuse3 2>/dev/null | grep -qx "Version: $pyfuse3_version"; then
    echo "==> pip install $pyfuse3_wheel"
    .venv/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
        "$pyfuse3_wheel"
fi
# regfs on the PATH, and the helper mount(8) runs for `mount -t fuse.regfs`, fstab lines
# and systemd .mount units (it looks in /sbin); contrib/ has examples of each.
as_root ln -sfn "$PWD/.venv/bin/regfs" /usr/local/bin/regfs
as_root ln -sfn "$PWD/.venv/bin/mount.fuse.regfs" /sbin/mount.fuse.regfs
# The man page and the bash completion, both made from the CLI's own argument parser. The
# page is the one the wheel ships (man/regfs.1): .venv/share/man is not on man's path.
as_root mkdir -p /usr/local/share/man/man1 /usr/share/bash-completion/completions
as_root install -m 644 man/regfs.1 /usr/local/share/man/man1/regfs.1
.venv/bin/regfs completion bash | as_root tee /usr/share/bash-completion/completions/regfs >/dev/null
