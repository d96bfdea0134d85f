"""docker's config.json and podman's auth.json as regfs reads them."""

from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regfs.domain.errors import AccessDenied, MalformedContent
from regfs.registry.authfile import (
    Found,
    find,
    helper_server_urls,
    lookup_keys,
    normalize_key,
    parse_auth_file,
    parse_helper_output,
)
from regfs.registry.credentials import DockerCredentials, auth_file_paths


def auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


DOCKER_CONFIG = json.dumps({
    "auths": {
        "https://index.docker.io/v1/": {"auth": auth("hubuser", "hubpass")},
        "registry.example:5000": {"username": "u", "password": "p:with:colons"},
        "quay.io/team": {"auth": auth("team", "t")},
        "quay.io": {"auth": auth("all", "a")},
        "oauth.example": {"identitytoken": "refresh-me"},
        "stored.example": {},
    },
    "credHelpers": {"gcr.io": "gcloud"},
    "credsStore": "pass",
}).encode()  # fmt: skip


def test_entries_resolve_as_docker_and_podman_resolve_them() -> None:
    parsed = parse_auth_file(DOCKER_CONFIG, "/c.json")
    hub = find(parsed, "registry-1.docker.io", "library/debian")
    assert hub and hub.credentials and hub.credentials.username == "hubuser"
    assert find(parsed, "docker.io", "x") == hub
    port = find(parsed, "registry.example:5000", "a")
    assert port and port.credentials and port.credentials.password == "p:with:colons"
    team = find(parsed, "quay.io", "team/app")
    other = find(parsed, "quay.io", "other/app")
    assert team and team.credentials and team.credentials.username == "team"
    assert other and other.credentials and other.credentials.username == "all"
    oauth = find(parsed, "oauth.example", "a")
    assert oauth and oauth.credentials and oauth.credentials.identity_token == "refresh-me"
    assert find(parsed, "gcr.io", "p/i") == Found(helper="gcloud")
    assert find(parsed, "stored.example", "a") == Found(helper="pass")  # {}: in the store
    assert find(parsed, "elsewhere.example", "a") == Found(helper="pass")


def test_without_a_store_unknown_registries_have_nothing() -> None:
    parsed = parse_auth_file(b'{"auths": {"a.example": {"auth": "' + auth("u", "p").encode()
                             + b'"}}}', "/a.json")  # fmt: skip
    assert find(parsed, "b.example", "x") is None
    assert parse_auth_file(b"", "/empty.json").auths == {}


@pytest.mark.parametrize(
    ("key", "normalized"),
    [("https://index.docker.io/v1/", "docker.io"), ("index.docker.io", "docker.io"),
     ("registry-1.docker.io", "docker.io"), ("http://host:5000", "host:5000"),
     ("https://host:5000/v2/", "host:5000"), ("quay.io/team/", "quay.io/team"),
     ("docker.io/library", "docker.io/library")],
)  # fmt: skip
def test_keys_are_normalized(key: str, normalized: str) -> None:
    assert normalize_key(key) == normalized


def test_lookup_keys_go_from_repository_to_registry() -> None:
    assert lookup_keys("quay.io", "a/b/c") == [
        "quay.io/a/b/c",
        "quay.io/a/b",
        "quay.io/a",
        "quay.io",
    ]
    assert lookup_keys("registry-1.docker.io", "") == ["docker.io"]
    assert helper_server_urls("registry-1.docker.io") == (
        "https://index.docker.io/v1/",
        "docker.io",
    )
    assert helper_server_urls("ghcr.io") == ("ghcr.io",)


@pytest.mark.parametrize(
    "raw",
    [b"[]", b"{", b'{"auths": []}', b'{"auths": {"a": 1}}', b'{"auths": {"a": {"auth": "!!"}}}',
     b'{"credHelpers": {"a": 1}}'],
)  # fmt: skip
def test_malformed_files_are_refused_naming_the_file(raw: bytes) -> None:
    with pytest.raises(MalformedContent, match=r"/bad\.json"):
        parse_auth_file(raw, "/bad.json")


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_malformed_content(raw: bytes) -> None:
    with contextlib.suppress(MalformedContent):
        parse_auth_file(raw, "/any.json")


def test_an_auth_without_a_colon_skips_its_entry_only(caplog: pytest.LogCaptureFixture) -> None:
    raw = json.dumps({"auths": {"other.lan": {"auth": base64.b64encode(b"token").decode()},
                                "reg.lan": {"auth": auth("alice", "pw")}}}).encode()  # fmt: skip
    parsed = parse_auth_file(raw, "/a.json")
    found = find(parsed, "reg.lan", "app")
    assert found and found.credentials and found.credentials.username == "alice"
    assert find(parsed, "other.lan", "app") is None
    assert [r.message for r in caplog.records] == [
        "/a.json: auths['other.lan'].auth is not user:password: entry skipped"]  # fmt: skip


def test_helper_output() -> None:
    plain = parse_helper_output(b'{"ServerURL": "x", "Username": "u", "Secret": "s"}', "pass")
    assert (plain.username, plain.password, plain.source) == ("u", "s", "docker-credential-pass")
    token = parse_helper_output(b'{"Username": "<token>", "Secret": "refresh"}', "pass")
    assert token.identity_token == "refresh" and not token.username
    with pytest.raises(MalformedContent):
        parse_helper_output(b'{"Username": "u"}', "pass")


def test_credentials_never_show_their_secrets() -> None:
    parsed = parse_auth_file(DOCKER_CONFIG, "/c.json")
    assert "p:with:colons" not in repr(parsed) and "refresh-me" not in repr(parsed)


def test_files_are_searched_in_podmans_order(tmp_path: Path) -> None:
    home = {"HOME": "/home/u"}
    assert auth_file_paths(home, None, uid=1000) == [
        Path("/run/containers/1000/auth.json"),  # podman's, without XDG_RUNTIME_DIR
        Path("/home/u/.config/containers/auth.json"), Path("/home/u/.docker/config.json"),
        Path("/home/u/.dockercfg"),  # docker's legacy file, last, as containers/image
    ]  # fmt: skip
    full = {**home, "XDG_RUNTIME_DIR": "/run/user/1", "XDG_CONFIG_HOME": "/cfg",
            "DOCKER_CONFIG": "/dc"}  # fmt: skip
    assert auth_file_paths(full, None) == [
        Path("/run/user/1/containers/auth.json"), Path("/cfg/containers/auth.json"),
        Path("/dc/config.json"), Path("/home/u/.dockercfg")]  # fmt: skip
    assert auth_file_paths({**full, "REGISTRY_AUTH_FILE": "/r.json"}, None) == [Path("/r.json")]
    assert auth_file_paths(full, tmp_path / "a.json") == [tmp_path / "a.json"]


async def test_the_legacy_dockercfg_holds_the_auths_map_alone(tmp_path: Path) -> None:
    legacy = tmp_path / ".dockercfg"
    legacy.write_text(json.dumps({"https://reg.lan/v1/": {"auth": auth("old", "pw")}}))
    found = await DockerCredentials([tmp_path / "config.json", legacy], 5).credentials_for(
        "reg.lan", "app"
    )
    assert found is not None and found.username == "old"


def write_json(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


async def test_a_file_that_does_not_parse_or_read_is_refused_not_skipped(tmp_path: Path) -> None:
    """As containers/image: going on to the next file would send another identity."""
    broken = tmp_path / "run/auth.json"
    broken.parent.mkdir()
    broken.write_text('{"auths": {"reg.lan": {"auth": "' + auth("alice", "pw") + '"}},')
    unreadable = tmp_path / "dir.json"
    unreadable.mkdir()
    docker = write_json(tmp_path / "config.json", {"auths": {"reg.lan": {"auth": auth("b", "o")}}})
    for first in (broken, unreadable):
        credentials = DockerCredentials([tmp_path / "missing.json", first, docker], 5)
        with pytest.raises(AccessDenied, match=str(first)):
            await credentials.credentials_for("reg.lan", "app")
    found = await DockerCredentials([tmp_path / "missing.json", docker], 5).credentials_for(
        "reg.lan", "app"
    )
    assert found is not None and found.username == "b"


def helper_on_path(monkeypatch: pytest.MonkeyPatch, bin_dir: Path, name: str, script: str) -> None:
    """``docker-credential-NAME``, a shell script reading the server from stdin."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    program = bin_dir / f"docker-credential-{name}"
    program.write_text("#!/bin/sh\nread server\n" + script)
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


NOT_FOUND = 'echo "credentials not found in native keychain"; exit 1\n'


async def test_a_helper_without_credentials_lets_the_next_file_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper_on_path(monkeypatch, tmp_path / "bin", "empty", NOT_FOUND)
    podman = write_json(tmp_path / "auth.json", {"credHelpers": {"reg.lan": "empty"}})
    docker = write_json(tmp_path / "config.json", {"auths": {"reg.lan": {"auth": auth("b", "p")}}})
    found = await DockerCredentials([podman, docker], 5).credentials_for("reg.lan", "app")
    assert found is not None and found.username == "b"


async def test_a_helper_is_asked_for_docker_hub_under_podmans_name_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper_on_path(monkeypatch, tmp_path / "bin", "store",
                   'if [ "$server" = docker.io ]; then echo \'{"Username":"hub","Secret":"pw"}\';'
                   " exit 0; fi\n" + NOT_FOUND)  # fmt: skip
    path = write_json(tmp_path / "auth.json", {"credHelpers": {"docker.io": "store"}})
    credentials = DockerCredentials([path], 5)
    found = await credentials.credentials_for("registry-1.docker.io", "library/x")
    assert found is not None and found.username == "hub"
