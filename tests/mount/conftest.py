"""Session fixtures: a real registry:2 with real images, and regfs mounted through its CLI."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ahead, images
from tests.support.estargz import EstargzConverter, estargz_converter
from tests.support.layered import LayeredLayouts
from tests.support.mount import Installation, Mount
from tests.support.proxy import CountingProxy
from tests.support.registry import BasicAuth, Registry
from tests.support.token_server import PUSHER, TokenServer

REAL_FILES = ["/etc/os-release", "/etc/debian_version", "/usr/share/common-licenses/GPL-3"]
MANY_TAGS = [f"t{i:03}" for i in range(120)]
BULK_REPOSITORIES = [f"bulk/r{i:03}" for i in range(100)]


@dataclass(frozen=True)
class Pushed:
    """What the session registry holds."""

    registry: Registry
    repositories: tuple[str, ...]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("regfs")


@pytest.fixture(scope="session")
def layout(workdir: Path) -> Path:
    """An OCI layout with an amd64 and an arm64 image of real files, and an index of both."""
    path = workdir / "oci"
    files = {name.lstrip("/"): Path(name).read_bytes() for name in REAL_FILES}
    images.build_image(path, "base", files)
    images.build_image(path, "arm", {**files, "etc/arch": b"arm64\n"}, architecture="arm64")
    images.build_index(path, "multi", {"base": ("linux", "amd64"), "arm": ("linux", "arm64")})
    return path


@pytest.fixture(scope="session")
def pushed(workdir: Path, layout: Path) -> Iterator[Pushed]:
    registry = Registry(workdir / "registry")
    host = registry.host
    images.push(layout, "base", f"{host}/library/debian:bookworm")
    images.push(layout, "base", f"{host}/formats/v2s2:latest", "--format", "v2s2")
    images.push(layout, "base", f"{host}/formats/schema1:latest", "--format", "v2s1")
    images.push(layout, "multi", f"{host}/multi/app:latest", "--all")
    images.push(layout, "base", f"{host}/nested/a/b/c:1")
    images.push(layout, "base", f"{host}/many/tags:{MANY_TAGS[0]}")
    images.tag_copies(registry.url, "many/tags", MANY_TAGS[0], MANY_TAGS[1:])
    images.repository_copies(registry.url, "library/debian", "bookworm", BULK_REPOSITORIES)
    yield Pushed(registry, tuple(images.catalog(registry.url)))
    registry.stop()


@pytest.fixture(scope="session")
def token_registry(workdir: Path, layout: Path) -> Iterator[tuple[Registry, TokenServer]]:
    """registry:2 with ``auth: token``; ``private/…`` is refused to anonymous callers."""
    tokens = TokenServer(workdir / "tokens")
    registry = Registry(workdir / "token-registry", token=tokens.auth)
    credentials = ":".join(PUSHER)
    for repository in ("public/img", "private/img"):
        destination = f"{registry.host}/{repository}:1"
        images.push(layout, "base", destination, "--dest-creds", credentials)
    yield registry, tokens
    registry.stop()
    tokens.stop()


BASIC_USER = BasicAuth("pusher", "htpasswd-secret-9f2c")


@pytest.fixture(scope="session")
def basic_registry(workdir: Path, layout: Path) -> Iterator[Registry]:
    """registry:2 with ``auth: htpasswd``: nothing without credentials, not even a catalog."""
    registry = Registry(workdir / "basic-registry", basic=BASIC_USER)
    credentials = f"{BASIC_USER.username}:{BASIC_USER.password}"
    for repository in ("solo", "team/app"):
        images.push(layout, "base", f"{registry.host}/{repository}:1", "--dest-creds", credentials)
    yield registry
    registry.stop()


@pytest.fixture(scope="session", autouse=True)
def installed_regfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """regfs built into a wheel and installed in a fresh venv: what every mount test runs
    (made ahead: ``tests/support/ahead.py``)."""
    bin_dir: Path = ahead.made("installed_regfs", tmp_path_factory)
    Installation.use(bin_dir)
    return bin_dir


@pytest.fixture(autouse=True)
def checked_logs() -> Iterator[None]:
    """Fail a test that leaves a WARNING, ERROR or traceback it did not declare in any
    regfs log (the session mount's and those the test made itself)."""
    yield
    unexpected = {str(m.path): m.unexpected_log_lines() for m in Mount.live}
    Mount.live[:] = [m for m in Mount.live if os.path.ismount(m.path)]
    unexpected = {path: lines for path, lines in unexpected.items() if lines}
    assert not unexpected, f"unexpected lines in the regfs log: {unexpected}"


@pytest.fixture(scope="session")
def mnt(workdir: Path) -> Iterator[Mount]:
    """regfs mounted once for the session with a short timeout, so failures come fast."""
    mount = Mount(workdir / "mnt", "--timeout", "5")
    yield mount
    mount.close()


LAYERED_FORMATS = ("oci", "v2s2", "zstd", "plain", "schema1")


@dataclass(frozen=True)
class Layered:
    """The layered Debian image (see tests/support/layered.py) in every format."""

    registry: Registry
    layout: Path
    oracle_rootfs: Path
    """``umoci unpack`` of the image: what rootfs/ must equal."""

    def image(self, mount: Mount, image_format: str) -> Path:
        return mount / self.registry.host / "layered" / image_format / "1"


@pytest.fixture(scope="session")
def estargz(workdir: Path) -> Iterator[EstargzConverter]:
    """eStargz conversions (ctr-remote), each made once per session, pushed on demand."""
    with estargz_converter(workdir / "estargz") as converter:
        yield converter


LAYERED_ESTARGZ = ("--estargz-compression-level", "1")
"""How the layered image is converted to eStargz (see ``layered_estargz``)."""


@pytest.fixture(scope="session")
def layered(
    estargz: EstargzConverter,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Layered]:
    """The layered image in every format (made ahead: ``tests/support/ahead.py``); its
    eStargz conversion (20 to 30 s) is begun in the background at once if a test of this
    session asks for it, so that it is made while other tests run."""
    layouts: LayeredLayouts = ahead.made("layered", tmp_path_factory)
    items = request.session.items
    if any("layered_estargz" in getattr(item, "fixturenames", ()) for item in items):
        estargz.start(layouts.oci, "1", *LAYERED_ESTARGZ)
    registry = Registry(layouts.oci.parent / "registry")
    host = registry.host
    images.push(layouts.oci, "1", f"{host}/layered/oci:1")
    images.push(layouts.oci, "1", f"{host}/layered/v2s2:1", "--format", "v2s2")
    images.push(layouts.oci, "1", f"{host}/layered/schema1:1", "--format", "v2s1")
    images.push(layouts.zstd, "1", f"{host}/layered/zstd:1")
    images.push(layouts.plain, "1", f"{host}/layered/plain:1")
    yield Layered(registry, layouts.oci, layouts.oracle_rootfs)
    registry.stop()


@pytest.fixture(scope="module")
def layered_proxy(layered: Layered) -> Iterator[CountingProxy]:
    """A counting proxy in front of the layered image's registry, for one test module."""
    counting = CountingProxy(layered.registry.port)
    yield counting
    counting.stop()


@pytest.fixture(scope="session")
def layered_estargz(layered: Layered, estargz: EstargzConverter) -> Callable[[str], None]:
    """Pushes the layered image, converted to eStargz by ctr-remote, to a destination
    (``127.0.0.1:PORT/repository:tag``)."""

    def push(destination: str) -> None:
        estargz.push(layered.layout, "1", destination, *LAYERED_ESTARGZ)

    return push
