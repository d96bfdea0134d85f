from __future__ import annotations

from regfs.domain.challenge import Challenge, next_link, parse_challenges


def test_bearer_challenge_of_registry_2() -> None:
    header = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"'
    assert parse_challenges([header]) == [
        Challenge("bearer", {"realm": "https://auth.docker.io/token",
                             "service": "registry.docker.io",
                             "scope": "repository:library/debian:pull"})
    ]  # fmt: skip


def test_several_challenges_in_one_header_and_commas_in_quotes() -> None:
    header = 'Basic realm="x y", Bearer realm="https://t/token", scope="repository:a:pull,push"'
    challenges = parse_challenges([header])
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[1].params["scope"] == "repository:a:pull,push"


def test_unquoted_and_escaped_values_and_case() -> None:
    (challenge,) = parse_challenges(['BEARER Realm=https://t/token, service="a\\"b"'])
    assert challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://t/token", "service": 'a"b'}


def test_scheme_without_params_and_garbage() -> None:
    assert parse_challenges(["Negotiate"]) == [Challenge("negotiate")]
    assert parse_challenges([""]) == []
    assert [c.scheme for c in parse_challenges(["Basic realm=", "Bearer"])] == ["basic", "bearer"]


def test_next_link() -> None:
    assert next_link(['</v2/_catalog?last=b&n=2>; rel="next"']) == "/v2/_catalog?last=b&n=2"
    assert next_link(["<https://h/v2/x?last=1>; rel=next"]) == "https://h/v2/x?last=1"
    assert next_link(['<a>; rel="prev", <b>; rel="next"']) == "b"
    # a comma quoted in another parameter ended the link's parameters before its rel
    assert next_link(['</v2/x?last=1>; title="a, b"; rel="next"']) == "/v2/x?last=1"
    assert next_link(['<a>; title="x, rel=next"; rel="prev"']) is None
    assert next_link(['<a>; rel="prev next"']) == "a"
    assert next_link(['<a>; rel="prev"']) is None
    assert next_link([]) is None
