"""Writing to a registry (``registry/push.py``): a blob goes up in one POST and one PUT,
once; a referrer is listed by the registry's referrers API or in the fallback tag. An
in-memory registry that stores what it is sent, autojump clock."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import httpx
import trio

from regfs.domain import mediatypes
from regfs.domain.artifacts import referrers_tag
from regfs.domain.digest import Digest
from regfs.domain.soci import SOCI_INDEX_V1
from regfs.registry.client import RegistryClient
from regfs.registry.config import ClientConfig
from regfs.registry.push import push_blob, push_referrer
from tests.support.fake_transport import StreamingTransport

HOST = "127.0.0.1:5000"
REPOSITORY = "a/b"
BLOB = b"a zTOC, say" * 100
SUBJECT = Digest.of(b"the image manifest")


class Registry:
    """Stores blobs and manifests as distribution does; ``referrers_api``: whether it
    answers a manifest with a subject with ``OCI-Subject``."""

    def __init__(self, *, referrers_api: bool, location: str = "/v2/a/b/blobs/uploads/u1") -> None:
        self.referrers_api = referrers_api
        self.location = location
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.transport = StreamingTransport(self.handle)

    def client(self) -> RegistryClient:
        return RegistryClient(
            ClientConfig(timeout=5), transport=self.transport, resolver=self.transport.resolve
        )

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append((request.method, path))
        body = await request.aread()
        if "/blobs/uploads/" in path:
            if request.method == "POST":
                return httpx.Response(202, headers={"Location": self.location})
            (digest,) = parse_qs(request.url.query.decode())["digest"]
            assert Digest.parse(digest).matches(body)
            self.blobs[digest] = body
            return httpx.Response(201)
        if "/blobs/" in path:
            known = path.rsplit("/", 1)[-1] in self.blobs
            return httpx.Response(200 if known else 404)
        reference = path.rsplit("/", 1)[-1]
        if request.method == "PUT":
            self.manifests[reference] = (request.headers["Content-Type"], body)
            subject = self.referrers_api and b'"subject"' in body
            return httpx.Response(201, headers={"OCI-Subject": str(SUBJECT)} if subject else {})
        if reference not in self.manifests:
            return httpx.Response(404)
        media_type, raw = self.manifests[reference]
        headers = {"Content-Type": media_type, "Docker-Content-Digest": str(Digest.of(raw))}
        return httpx.Response(200, content=raw, headers=headers)


def referrer_manifest() -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": SOCI_INDEX_V1, "digest": str(Digest.of(b"{}")), "size": 2},
        "layers": [], "subject": {"mediaType": mediatypes.OCI_MANIFEST,
                                  "digest": str(SUBJECT), "size": 18},
    }).encode()  # fmt: skip


async def test_a_blob_goes_up_in_one_put_once(autojump_clock: trio.abc.Clock) -> None:
    registry = Registry(referrers_api=True)
    client = registry.client()
    assert await push_blob(client, HOST, REPOSITORY, BLOB) == Digest.of(BLOB)
    assert await push_blob(client, HOST, REPOSITORY, BLOB) == Digest.of(BLOB)
    assert registry.blobs == {str(Digest.of(BLOB)): BLOB}
    methods = [method for method, _ in registry.requests]
    assert methods == ["HEAD", "POST", "PUT", "HEAD"]  # the second push finds it there


async def test_an_upload_location_with_a_query_keeps_it(autojump_clock: trio.abc.Clock) -> None:
    registry = Registry(referrers_api=True, location="/v2/a/b/blobs/uploads/u1?_state=xyz")
    await push_blob(registry.client(), HOST, REPOSITORY, BLOB)
    assert registry.blobs == {str(Digest.of(BLOB)): BLOB}


async def test_a_registry_with_the_referrers_api_gets_no_fallback_tag(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = Registry(referrers_api=True)
    manifest = referrer_manifest()
    digest = await push_referrer(
        registry.client(), HOST, REPOSITORY, manifest, subject=SUBJECT, artifact_type=SOCI_INDEX_V1
    )
    assert digest == Digest.of(manifest)
    assert registry.manifests == {str(digest): (mediatypes.OCI_MANIFEST, manifest)}


async def test_without_the_referrers_api_the_fallback_tag_lists_the_referrer_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = Registry(referrers_api=False)
    client = registry.client()
    manifest = referrer_manifest()
    for _ in range(2):
        await push_referrer(
            client, HOST, REPOSITORY, manifest, subject=SUBJECT, artifact_type=SOCI_INDEX_V1
        )
    media_type, raw = registry.manifests[referrers_tag(SUBJECT)]
    listed = json.loads(raw)["manifests"]
    assert media_type == mediatypes.OCI_INDEX
    assert [(d["digest"], d["artifactType"]) for d in listed] == [
        (str(Digest.of(manifest)), SOCI_INDEX_V1)
    ]
