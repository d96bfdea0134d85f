"""registries.conf v2 as regfs reads it: which places a reference is pulled from."""

from __future__ import annotations

from pathlib import Path

import pytest

from regfs.domain.errors import MalformedContent
from regfs.registry.aliases import RegfsConfig, parse_config
from regfs.registry.registries_conf import Endpoint, merge, parse_registries_conf
from regfs.registry.settings import registries_conf_files
from regfs.registry.tls_settings import TlsSettings

CONF = """
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "example.com/foo"
location = "internal.example.com/bar"
insecure = true

[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "mirror.lan:5000"
insecure = true
[[registry.mirror]]
location = "digests.lan/hub"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tags.lan"
pull-from-mirror = "tag-only"

[[registry]]
location = "evil.example"
blocked = true

[[registry]]
prefix = "*.corp.example"
[[registry.mirror]]
location = "cache.corp.example"
"""


def test_a_prefix_is_rewritten_to_its_location() -> None:
    registries = merge([("r.conf", parse_registries_conf(CONF, "r.conf"))])
    assert registries.endpoints("example.com", "foo/app", by_digest=False) == [
        Endpoint("internal.example.com", "bar/app", insecure=True)]  # fmt: skip
    assert registries.endpoints("example.com", "foobar/app", by_digest=False) == [
        Endpoint("example.com", "foobar/app")]  # fmt: skip


def test_mirrors_come_first_as_pull_from_mirror_allows() -> None:
    registries = merge([("r.conf", parse_registries_conf(CONF, "r.conf"))])
    by_tag = registries.endpoints("docker.io", "library/debian", by_digest=False)
    by_digest = registries.endpoints("docker.io", "library/debian", by_digest=True)
    assert [e.host for e in by_tag] == ["mirror.lan:5000", "tags.lan", "docker.io"]
    assert [e.host for e in by_digest] == ["mirror.lan:5000", "digests.lan", "docker.io"]
    assert by_digest[1] == Endpoint("digests.lan", "hub/library/debian", mirror=True)
    assert by_tag[0].insecure and by_tag[0].mirror and not by_tag[-1].mirror


def test_mirror_by_digest_only_keeps_tags_off_every_mirror() -> None:
    registries = merge([("r.conf", parse_registries_conf(
        '[[registry]]\nlocation = "docker.io"\nmirror-by-digest-only = true\n'
        '[[registry.mirror]]\nlocation = "stale-mirror.lan"\n', "r.conf"))])  # fmt: skip
    by_tag = registries.endpoints("docker.io", "library/debian", by_digest=False)
    by_digest = registries.endpoints("docker.io", "library/debian", by_digest=True)
    assert [e.host for e in by_tag] == ["docker.io"]
    assert [e.host for e in by_digest] == ["stale-mirror.lan", "docker.io"]


def test_docker_hub_names_are_matched_and_rewritten_as_docker_io_library() -> None:
    registries = merge([("r.conf", parse_registries_conf(
        '[[registry]]\nprefix = "docker.io"\nlocation = "127.0.0.1:5000"\n'
        '[[registry.mirror]]\nlocation = "mirror.lan"\n', "r.conf"))])  # fmt: skip
    for host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        for repository in ("debian", "library/debian"):
            assert registries.endpoints(host, repository, by_digest=False) == [
                Endpoint("mirror.lan", "library/debian", mirror=True),
                Endpoint("127.0.0.1:5000", "library/debian")]  # fmt: skip
    assert registries.endpoints("index.docker.io", "", by_digest=False)[-1].host == (
        "127.0.0.1:5000")  # fmt: skip


def test_a_blocked_docker_hub_namespace_is_blocked_under_every_hub_name() -> None:
    registries = merge([("r.conf", parse_registries_conf(
        '[[registry]]\nlocation = "docker.io/library"\nblocked = true\n', "r.conf"))])  # fmt: skip
    for host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert registries.endpoints(host, "debian", by_digest=False) == []
        assert registries.endpoints(host, "library/debian", by_digest=False) == []
    assert registries.endpoints("docker.io", "team/app", by_digest=False) == [
        Endpoint("docker.io", "team/app")]  # fmt: skip


def test_a_block_names_the_file_that_says_it() -> None:
    """configuration.md: ``blocked = true`` is EACCES ``with a log line naming the file``;
    the line named every file read (/etc's, each drop-in), whichever blocked."""
    main = parse_registries_conf('[[registry]]\nlocation = "a.lan"\n', "/etc/r.conf")
    drop_in = parse_registries_conf(
        '[[registry]]\nlocation = "b.lan/team"\nblocked = true\n', "/etc/r.conf.d/50.conf"
    )
    registries = merge([("/etc/r.conf", main), ("/etc/r.conf.d/50.conf", drop_in)])
    assert registries.endpoints("b.lan", "team/app", by_digest=False) == []
    assert registries.table_source("b.lan", "team/app") == "/etc/r.conf.d/50.conf"
    assert registries.table_source("c.lan", "x") == "/etc/r.conf, /etc/r.conf.d/50.conf"


def test_blocked_and_wildcards_and_insecure_hosts() -> None:
    registries = merge([("r.conf", parse_registries_conf(CONF, "r.conf"))])
    assert registries.endpoints("evil.example", "x", by_digest=True) == []
    assert registries.endpoints("evil.example", "", by_digest=False) == []  # its catalog too
    wild = registries.endpoints("git.corp.example", "team/app", by_digest=True)
    assert wild == [Endpoint("cache.corp.example", "team/app", mirror=True),
                    Endpoint("git.corp.example", "team/app")]  # fmt: skip
    assert registries.insecure_hosts() == {"internal.example.com", "mirror.lan:5000"}
    assert registries.endpoints("other.example", "a", by_digest=True) == [
        Endpoint("other.example", "a")]  # fmt: skip


def test_a_wildcard_prefix_matches_its_subdomains_on_any_port() -> None:
    registries = merge([("r.conf", parse_registries_conf(
        '[[registry]]\nprefix = "*.example.com"\nblocked = true\n', "r.conf"))])  # fmt: skip
    assert registries.endpoints("reg.example.com:5000", "app", by_digest=False) == []
    assert registries.endpoints("reg.example.com", "app", by_digest=False) == []
    assert registries.endpoints("example.com:5000", "app", by_digest=False) != []


def test_within_one_file_the_first_table_of_a_prefix_wins() -> None:
    main = parse_registries_conf(
        '[[registry]]\nprefix = "a.lan"\nlocation = "first.lan"\n'
        '[[registry]]\nprefix = "a.lan"\nlocation = "second.lan"\n',
        "m",
    )
    drop_in = parse_registries_conf(
        '[[registry]]\nprefix = "a.lan"\nlocation = "third.lan"\n'
        '[[registry]]\nprefix = "a.lan"\nlocation = "fourth.lan"\n',
        "d",
    )
    assert merge([("m", main)]).endpoints("a.lan", "x", by_digest=False)[0].host == "first.lan"
    both = merge([("m", main), ("d", drop_in)])
    assert both.endpoints("a.lan", "x", by_digest=False)[0].host == "third.lan"


def test_the_longest_prefix_wins_and_later_files_override() -> None:
    main = parse_registries_conf('[[registry]]\nlocation = "a.example"\nblocked = true\n', "m")
    drop_in = parse_registries_conf('[[registry]]\nlocation = "a.example"\n', "d")
    nested = parse_registries_conf(
        '[[registry]]\nprefix = "a.example/team"\nlocation = "b.example/t"\n', "n"
    )
    registries = merge([("m", main), ("d", drop_in), ("n", nested)])
    assert registries.endpoints("a.example", "x", by_digest=True) == [Endpoint("a.example", "x")]
    assert registries.endpoints("a.example", "team/x", by_digest=True) == [
        Endpoint("b.example", "t/x")]  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["[[registry", "registry = 1", '[[registry]]\ninsecure = "yes"\nlocation = "a"',
     "[[registry]]\nblocked = true", '[[registry]]\nlocation = "a"\nmirror = 1',
     '[[registry]]\nlocation = "a"\n[[registry.mirror]]\npull-from-mirror = "all"',
     '[[registry]]\nlocation = "a"\n[[registry.mirror]]\nlocation = "m"\n'
     'pull-from-mirror = "sometimes"',
     '[[registry]]\nlocation = "a"\nmirror-by-digest-only = true\n'
     '[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "all"',
     '[[registry]]\nlocation = "a"\nmirror-by-digest-only = "yes"'],
)  # fmt: skip
def test_malformed_files_are_refused_naming_the_file(text: str) -> None:
    with pytest.raises(MalformedContent, match=r"r\.conf"):
        parse_registries_conf(text, "r.conf")


def test_files_are_found_as_containers_image_finds_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"HOME": str(home)}
    assert registries_conf_files(env)[0] == Path("/etc/containers/registries.conf")
    user = home / ".config/containers/registries.conf"
    user.parent.mkdir(parents=True)
    user.write_text("")
    drop_ins = home / ".config/containers/registries.conf.d"
    drop_ins.mkdir()
    (drop_ins / "20-b.conf").write_text("")
    (drop_ins / "10-a.conf").write_text("")
    (drop_ins / "ignored.txt").write_text("")
    assert registries_conf_files(env) == [user, drop_ins / "10-a.conf", drop_ins / "20-b.conf"]
    named = tmp_path / "named.conf"
    found = registries_conf_files({**env, "CONTAINERS_REGISTRIES_CONF": str(named)})
    assert found[0] == named and found[-2:] == [drop_ins / "10-a.conf", drop_ins / "20-b.conf"]


def test_certs_d_for_docker_hub_is_named_docker_io(tmp_path: Path) -> None:
    (tmp_path / "docker.io").mkdir()
    (tmp_path / "registry-1.docker.io").mkdir()
    tls = TlsSettings([tmp_path])
    for host in ("registry-1.docker.io", "docker.io", "index.docker.io"):
        assert tls.host_dir(host) == tmp_path / "docker.io"


def test_aliases_from_regfs_config() -> None:
    portal, lab = "https://portal.example.com/some/prefix", "http://10.0.0.5:5000"
    text = f'[aliases]\nportal = "{portal}/"\nlab = "{lab}"\n'
    assert parse_config(text, "c.toml").aliases == {"portal": portal, "lab": lab}
    assert parse_config("", "c.toml") == RegfsConfig()


def test_soci_v1_referrers_are_off_unless_the_config_says_so() -> None:
    assert parse_config("", "c.toml").soci_v1_referrers is False
    assert parse_config("[soci]\nv1-referrers = true\n", "c.toml").soci_v1_referrers is True
    assert parse_config("[soci]\nv1-referrers = false\n", "c.toml").soci_v1_referrers is False


@pytest.mark.parametrize(
    "text",
    ["[aliases", "aliases = 1", '[aliases]\n"a/b" = "https://x"', '[aliases]\n".." = "https://x"',
     '[aliases]\na = "ftp://x"', '[aliases]\na = 5', '[aliases]\na = "https://x/p?q=1"',
     "soci = 1", '[soci]\nv1-referrers = "yes"', "[soci]\nv1_referrers = true"],
)  # fmt: skip
def test_bad_settings_are_refused_naming_the_file(text: str) -> None:
    with pytest.raises(MalformedContent, match=r"c\.toml"):
        parse_config(text, "c.toml")
