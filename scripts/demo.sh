#!/usr/bin/env bash
# The quick start: installs what is missing, starts a local registry:2 with a sample image
# built from real files, mounts regfs and shows what a user sees. `scripts/demo.sh stop`
# unmounts and stops the registry again.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=$PWD/.demo
MNT=$DEMO/mnt
REGFS=$PWD/.venv/bin/regfs

stop() {
    if [ -x "$REGFS" ] && grep -qs " $MNT " /proc/self/mountinfo; then "$REGFS" umount "$MNT"; fi
    if [ -f "$DEMO/registry.pid" ]; then
        kill "$(cat "$DEMO/registry.pid")" 2>/dev/null || true
        rm -f "$DEMO/registry.pid"
    fi
}
if [ "${1:-}" = stop ]; then stop; echo "demo stopped"; exit 0; fi

scripts/install.sh
stop
rm -rf "$DEMO"
mkdir -p "$DEMO/mnt"
PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HOST=127.0.0.1:$PORT

echo "==> starting registry:2 (Debian's docker-registry) on $HOST"
cat > "$DEMO/registry.yml" <<YAML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $DEMO/storage}}
http: {addr: "$HOST"}
YAML
nohup docker-registry serve "$DEMO/registry.yml" >"$DEMO/registry.log" 2>&1 &
echo $! >"$DEMO/registry.pid"
for _ in $(seq 100); do curl -fs "http://$HOST/v2/" >/dev/null && break; sleep 0.1; done

echo "==> building a sample image from real files with umoci, pushing it with skopeo"
umoci init --layout "$DEMO/oci"
umoci new --image "$DEMO/oci:hello"
umoci unpack --image "$DEMO/oci:hello" "$DEMO/bundle" >/dev/null
mkdir -p "$DEMO/bundle/rootfs/etc" "$DEMO/bundle/rootfs/usr/share"
cp /etc/os-release /etc/debian_version "$DEMO/bundle/rootfs/etc/" 2>/dev/null || cp /etc/os-release "$DEMO/bundle/rootfs/etc/"
cp -r /usr/share/common-licenses "$DEMO/bundle/rootfs/usr/share/" 2>/dev/null || true
umoci repack --image "$DEMO/oci:hello" "$DEMO/bundle"      # layer 0
rm -rf "$DEMO/bundle"
umoci unpack --image "$DEMO/oci:hello" "$DEMO/bundle" >/dev/null
echo "hello from an upper layer" > "$DEMO/bundle/rootfs/etc/motd"
rm -f "$DEMO/bundle/rootfs/etc/debian_version"             # a whiteout in layer 1
umoci repack --image "$DEMO/oci:hello" "$DEMO/bundle"      # layer 1
skopeo copy --quiet --dest-tls-verify=false "oci:$DEMO/oci:hello" "docker://$HOST/demo/hello:latest"
skopeo copy --quiet --dest-tls-verify=false --format v2s2 "oci:$DEMO/oci:hello" "docker://$HOST/demo/hello:v2s2"

show() { echo; echo "\$ $*"; eval "$@"; }

echo "==> warming the cache before mounting (a progress bar on a terminal)"
show "$REGFS" prefetch --cache-dir "$DEMO/cache" "$HOST/demo/hello:latest"
show "$REGFS" cache stats --cache-dir "$DEMO/cache"

echo
echo "==> regfs mount $MNT"
"$REGFS" mount "$MNT" --log-file "$DEMO/regfs.log" --cache-dir "$DEMO/cache"
show ls "$MNT/$HOST/"
show ls -l "$MNT/$HOST/demo/hello/"
show ls -l "$MNT/$HOST/demo/hello/latest/"
show "cat '$MNT/$HOST/demo/hello/latest/manifest'; echo"
show "cat '$MNT/$HOST/demo/hello/latest/config'; echo"
show getfattr -d "$MNT/$HOST/demo/hello/latest"
show ls -l "$MNT/$HOST/demo/hello/latest/1/etc/"
show ls "$MNT/$HOST/demo/hello/latest/rootfs/etc/"
show cat "$MNT/$HOST/demo/hello/latest/rootfs/etc/motd"
show head -3 "$MNT/$HOST/demo/hello/latest/rootfs/etc/os-release"
show getfattr -n user.regfs.layer "$MNT/$HOST/demo/hello/latest/rootfs/etc/motd"
show getfattr -d -m user.regfs "$MNT/$HOST/demo/hello/latest/1"
show "$REGFS" status "$MNT"
cat <<TEXT

The mount stays up: browse $MNT/$HOST/ (or any registry host: $MNT/HOST[:PORT]/...).
Log: $DEMO/regfs.log.  Stop with: scripts/demo.sh stop
TEXT
