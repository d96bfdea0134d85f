from __future__ import annotations

import pytest

from regfs.domain.errors import MalformedContent
from regfs.domain.platform import Platform, best_match


@pytest.mark.parametrize(("text", "expected"), [
    ("linux/amd64", Platform("linux", "amd64")),
    ("linux/arm64", Platform("linux", "arm64", "v8")),
    ("linux/aarch64", Platform("linux", "arm64", "v8")),
    ("linux/arm", Platform("linux", "arm", "v7")),
    ("linux/arm/v6", Platform("linux", "arm", "v6")),
    ("Linux/x86_64", Platform("linux", "amd64")),
])  # fmt: skip
def test_parse_normalises(text: str, expected: Platform) -> None:
    assert Platform.parse(text) == expected


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d", ""])
def test_parse_refuses_malformed(text: str) -> None:
    with pytest.raises(MalformedContent):
        Platform.parse(text)


def test_dir_name_and_str() -> None:
    assert Platform("linux", "arm64", "v8").dir_name == "linux-arm64-v8"
    assert str(Platform("linux", "amd64")) == "linux/amd64"


INDEX = [Platform("linux", "amd64"), Platform("linux", "arm", "v6"), Platform("linux", "arm", "v7"),
         Platform("linux", "arm64"), Platform("windows", "amd64")]  # fmt: skip


@pytest.mark.parametrize(("wanted", "position"), [
    (Platform("linux", "amd64"), 0),
    (Platform("linux", "arm", "v7"), 2),
    (Platform("linux", "arm"), 2),  # arm means v7
    (Platform("linux", "arm64", "v8"), 3),  # an index's "arm64" is v8
    (Platform("windows", "amd64"), 4),
    (Platform("linux", "s390x"), None),
    (Platform("linux", "arm", "v5"), None),
])  # fmt: skip
def test_best_match(wanted: Platform, position: int | None) -> None:
    assert best_match(wanted, INDEX) == position
