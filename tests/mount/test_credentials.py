"""Credentials read where docker and podman keep them, against registry:2 with htpasswd
and with token auth. Every file lives in a temp HOME or is named by an env var."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from tests.mount.conftest import BASIC_USER
from tests.support.fake_registry import FakeRegistry, Reply
from tests.support.mount import Mount
from tests.support.registry import Registry
from tests.support.token_server import PUSHER, REFRESH_TOKEN, TokenServer

pytestmark = pytest.mark.mount


def auth_json(path: Path, registry: str, user: str, password: str) -> Path:
    """An auth file as ``podman login`` / ``docker login`` write it."""
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {registry: {"auth": encoded}}}))
    return path


def helper(bin_dir: Path, name: str, script: str) -> Path:
    """``docker-credential-NAME``: a tiny script on PATH, as helpers are installed."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    program = bin_dir / f"docker-credential-{name}"
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(0o755)
    return program


def on_path(bin_dir: Path) -> dict[str, str]:
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_credentials_from_registry_auth_file(tmp_path: Path, basic_registry: Registry) -> None:
    host = basic_registry.host
    auth = auth_json(tmp_path / "auth.json", host, BASIC_USER.username, BASIC_USER.password)
    mount = Mount(tmp_path / "mnt", environment={"REGISTRY_AUTH_FILE": str(auth)})
    try:
        image = mount / host / "solo/1"
        assert os.listdir(mount / host / "solo") == ["1"]
        assert b'"schemaVersion"' in (image / "manifest").read_bytes()
        assert (image / "rootfs/etc/os-release").read_bytes() == Path(
            "/etc/os-release"
        ).read_bytes()
        assert os.listdir(mount / host / "team/app") == ["1"]
        assert BASIC_USER.password not in mount.log()
    finally:
        mount.close()


def test_docker_config_in_home_is_read_again_when_it_changes(
    tmp_path: Path, basic_registry: Registry
) -> None:
    host = basic_registry.host
    home = tmp_path / "home"
    config = auth_json(home / ".docker/config.json", host, BASIC_USER.username, "wrong")
    mount = Mount(tmp_path / "mnt", "--metadata-ttl", "0.1", environment={"HOME": str(home)})
    mount.allow_log(rf"{host}/v2/solo/tags/list with credentials from {config}: HTTP 401")
    try:
        with pytest.raises(OSError) as caught:
            os.listdir(mount / host / "solo")
        assert caught.value.errno == errno.EACCES
        assert f"with credentials from {config}: HTTP 401" in mount.log()
        time.sleep(0.05)  # a new mtime even on coarse clocks
        auth_json(config, host, BASIC_USER.username, BASIC_USER.password)  # docker login
        assert os.listdir(mount / host / "solo") == ["1"]
        assert "wrong" not in mount.log() and BASIC_USER.password not in mount.log()
    finally:
        mount.close()


def test_podmans_runtime_auth_file_comes_before_dockers(
    tmp_path: Path, basic_registry: Registry
) -> None:
    host = basic_registry.host
    home, runtime = tmp_path / "home", tmp_path / "run"
    auth_json(home / ".docker/config.json", host, BASIC_USER.username, "stale")
    auth_json(runtime / "containers/auth.json", host, BASIC_USER.username, BASIC_USER.password)
    environment = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    mount = Mount(tmp_path / "mnt", environment=environment)
    try:
        assert os.listdir(mount / host / "solo") == ["1"]
    finally:
        mount.close()


def test_a_credential_helper_on_path(tmp_path: Path, basic_registry: Registry) -> None:
    host = basic_registry.host
    asked = tmp_path / "asked"
    answer = json.dumps({"ServerURL": host, "Username": BASIC_USER.username,
                         "Secret": BASIC_USER.password})  # fmt: skip
    bin_dir = tmp_path / "bin"
    helper(bin_dir, "regfs-test", f"[ \"$1\" = get ] || exit 2\ncat > {asked}\necho '{answer}'\n")
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker/config.json").write_text(json.dumps({"credHelpers": {host: "regfs-test"}}))
    mount = Mount(tmp_path / "mnt", environment={"HOME": str(home), **on_path(bin_dir)})
    try:
        assert os.listdir(mount / host / "solo") == ["1"]
        assert asked.read_text() == host  # the server URL on stdin, as docker sends it
    finally:
        mount.close()


def test_a_hanging_credential_helper_is_killed_and_refused(
    tmp_path: Path, basic_registry: Registry
) -> None:
    host = basic_registry.host
    bin_dir = tmp_path / "bin"
    helper(bin_dir, "hangs", "exec sleep 600\n")
    config = tmp_path / "auth.json"
    config.write_text(json.dumps({"credsStore": "hangs"}))
    environment = {"REGISTRY_AUTH_FILE": str(config), **on_path(bin_dir)}
    mount = Mount(tmp_path / "mnt", "--timeout", "2", environment=environment)
    mount.allow_log(rf"docker-credential-hangs \(named in {config}\) for {host}: no answer")
    try:
        start = time.monotonic()
        with pytest.raises(OSError) as caught:
            os.listdir(mount / host / "solo")
        assert caught.value.errno == errno.EACCES
        assert time.monotonic() - start < 6
        assert "no answer within 2s, killed" in mount.log()
    finally:
        mount.close()


def test_token_registry_with_credentials_from_auth_file_option(
    tmp_path: Path, token_registry: tuple[Registry, TokenServer]
) -> None:
    registry, _ = token_registry
    auth = auth_json(tmp_path / "service-account.json", registry.host, *PUSHER)
    mount = Mount(tmp_path / "mnt", "--auth-file", str(auth))
    try:
        assert os.listdir(mount / registry.host / "private/img") == ["1"]  # anonymous: EACCES
        assert (mount / registry.host / "private/img/1/config").read_bytes().startswith(b"{")
    finally:
        mount.close()


def test_an_identity_token_is_exchanged_with_an_oauth2_post(
    tmp_path: Path, token_registry: tuple[Registry, TokenServer]
) -> None:
    registry, tokens = token_registry
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {registry.host: {"identitytoken": REFRESH_TOKEN}}}))
    mount = Mount(tmp_path / "mnt", "--auth-file", str(auth))
    try:
        assert os.listdir(mount / registry.host / "private/img") == ["1"]
        assert any(request.get("method") == ["POST"] for request in tokens.requests)
        assert REFRESH_TOKEN not in mount.log()
    finally:
        mount.close()


def test_a_token_that_expires_mid_read_is_renewed_without_failing_it(
    tmp_path: Path, token_registry: tuple[Registry, TokenServer]
) -> None:
    """Tokens valid for 5 s (registry:2 allows 60 s of leeway past ``exp``) but announced
    for 300: the cached token dies between two reads, and the 401 fetches a new one."""
    registry, tokens = token_registry
    auth = auth_json(tmp_path / "auth.json", registry.host, *PUSHER)
    tokens.token_lifetime = -55
    mount = Mount(tmp_path / "mnt", "--auth-file", str(auth))
    try:
        image = mount / registry.host / "private/img/1"
        assert b'"schemaVersion"' in (image / "manifest").read_bytes()
        before = len(tokens.requests)
        time.sleep(6)
        assert (image / "rootfs/etc/os-release").read_bytes() == Path(
            "/etc/os-release"
        ).read_bytes()
        assert len(tokens.requests) > before
    finally:
        tokens.token_lifetime = 300
        mount.close()


def test_cached_content_is_served_only_where_the_registry_serves_it(
    tmp_path: Path, token_registry: tuple[Registry, TokenServer]
) -> None:
    """Two mounts share a cache: one with credentials reads a private layer; the other,
    anonymous, meets a manifest elsewhere that names the same layer. The registry there
    does not have that blob, so the cache must not hand it over."""
    registry, _ = token_registry
    cache = tmp_path / "cache"
    auth = auth_json(tmp_path / "auth.json", registry.host, *PUSHER)
    owner = Mount(tmp_path / "owner", "--auth-file", str(auth), "--cache-dir", str(cache))
    try:
        private = owner / registry.host / "private/img/1"
        assert (private / "rootfs/etc/os-release").read_bytes() == Path(
            "/etc/os-release"
        ).read_bytes()
        manifest = (private / "manifest").read_bytes()
        config = (private / "config").read_bytes()
    finally:
        owner.close()
    thief = FakeRegistry({})
    thief.routes["/v2/copy/img/tags/list"] = Reply(200, b'{"tags":["1"]}')
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    for reference in ("1", digest):
        thief.routes[f"/v2/copy/img/manifests/{reference}"] = Reply(
            200, manifest, {"Docker-Content-Digest": digest}
        )
    config_digest = json.loads(manifest)["config"]["digest"]
    thief.routes[f"/v2/copy/img/blobs/{config_digest}"] = Reply(200, config)
    other = Mount(tmp_path / "other", "--cache-dir", str(cache))
    other.allow_log(rf"{thief.host}/v2/copy/img/blobs/sha256:\w+: HTTP 404")
    try:
        with pytest.raises(OSError) as caught:
            (other / thief.host / "copy/img/1/rootfs/etc/os-release").read_bytes()
        assert caught.value.errno == errno.ENOENT
        assert any(method == "HEAD" and "/blobs/" in path for method, path in thief.requests)
    finally:
        other.close()
        thief.stop()
