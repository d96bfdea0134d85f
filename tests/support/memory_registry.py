"""A registry held in memory, answering ``StreamingTransport`` requests as registry:2 would.

For component tests of the tree and the FUSE adapter: images of hand-built layers
(``crafted.py``), a catalog, tag lists, manifests and ranged blob reads, with refusals and
failures switched on per repository, and every request counted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field

import httpx
import trio

from tests.support.crafted import OCI_MANIFEST, oci_image

API = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<reference>[^/]+)")
KINDS = ("tags", "manifests", "blobs")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
NAME_UNKNOWN = {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Repository:
    tags: dict[str, str] = field(default_factory=dict)
    """Tag → manifest digest."""
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    """Digest → (raw bytes, media type)."""
    blobs: dict[str, bytes] = field(default_factory=dict)


@dataclass
class MemoryRegistry:
    repositories: dict[str, Repository] = field(default_factory=dict)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    """(repository, kind of request) → the status its requests get (see ``fail``)."""
    stalled: set[str] = field(default_factory=set)
    """Repositories whose requests are never answered."""
    delay: float = 0.0
    """Seconds (of trio's clock) each answer about a repository takes."""
    down: bool = False
    """Every request answered 503, as by a registry behind a proxy whose backend is gone."""
    catalog_status: int = 200
    """What ``/v2/_catalog`` answers: 200 (the catalog) or a refusal."""
    requests: Counter[str] = field(default_factory=Counter)
    """``METHOD kind name reference`` (``GET blobs app sha256:…``) → how many were answered."""

    def push(
        self, repository: str, tag: str, layers: list[bytes], diff_ids: list[str] | None = None
    ) -> str:
        """An image of gzip ``layers`` (bottom first) as ``repository:tag``, its config
        naming ``diff_ids``; its digest."""
        config_bytes, manifest = oci_image(layers, diff_ids=diff_ids)
        stored = self.repositories.setdefault(repository, Repository())
        for blob in (config_bytes, *layers):
            stored.blobs[sha256(blob)] = blob
        return self.put_manifest(repository, tag, json.dumps(manifest).encode(), OCI_MANIFEST)

    def push_index(self, repository: str, tag: str, images: dict[str, str]) -> str:
        """An OCI index of ``images`` (``os/arch`` → a manifest digest pushed to
        ``repository``) as ``repository:tag``; its digest."""
        manifests = self.repositories[repository].manifests
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": manifests[digest][1], "digest": digest,
                 "size": len(manifests[digest][0]),
                 "platform": dict(zip(("os", "architecture"), platform.split("/"), strict=True))}
                for platform, digest in images.items()
            ],
        }  # fmt: skip
        return self.put_manifest(repository, tag, json.dumps(index).encode(), OCI_INDEX)

    def put_manifest(self, repository: str, tag: str, raw: bytes, media_type: str) -> str:
        digest = sha256(raw)
        stored = self.repositories.setdefault(repository, Repository())
        stored.manifests[digest] = (raw, media_type)
        stored.tags[tag] = digest
        return digest

    def fail(self, repository: str, status: int, kinds: tuple[str, ...] = KINDS) -> None:
        """Answer ``repository``'s requests of ``kinds`` (``tags``, ``manifests``,
        ``blobs``) with ``status`` (401, 403, 404, 500) from now on."""
        self.failures |= {(repository, kind): status for kind in kinds}

    def blob_gets(self, digest: str) -> int:
        """GETs of blob ``digest`` in any repository (whole or ranged)."""
        return sum(
            count
            for key, count in self.requests.items()
            if key.startswith("GET blobs ") and key.endswith(f" {digest}")
        )

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if self.down:
            self.requests["while down"] += 1
            return httpx.Response(503, json={"errors": [{"code": "UNAVAILABLE"}]})
        if path == "/v2/":
            return httpx.Response(200, json={})
        if path == "/v2/_catalog":
            self.requests["GET catalog"] += 1
            if self.catalog_status != 200:
                return httpx.Response(self.catalog_status, json={"errors": []})
            return httpx.Response(200, json={"repositories": sorted(self.repositories)})
        found = API.fullmatch(path)
        if found is None:
            return httpx.Response(404, json={"errors": [{"code": "UNSUPPORTED"}]})
        name, kind, reference = found["name"], found["kind"], found["reference"]
        self.requests[f"{request.method} {kind} {name} {reference}"] += 1
        if name in self.stalled:
            await trio.sleep_forever()
        await trio.sleep(self.delay)
        status = self.failures.get((name, kind))
        if status is not None:
            code = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN"}.get(status, "?")
            return httpx.Response(status, json={"errors": [{"code": code, "message": name}]})
        repository = self.repositories.get(name)
        if repository is None:
            return httpx.Response(404, json=NAME_UNKNOWN)
        if kind == "tags":
            return httpx.Response(200, json={"name": name, "tags": sorted(repository.tags)})
        if kind == "manifests":
            return self._manifest(request, repository, reference)
        return self._blob(request, repository, reference)

    @staticmethod
    def _manifest(request: httpx.Request, repository: Repository, reference: str) -> httpx.Response:
        digest = repository.tags.get(reference, reference)
        if digest not in repository.manifests:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        raw, media_type = repository.manifests[digest]
        headers = {"Content-Type": media_type, "Docker-Content-Digest": sha256(raw)}
        body = b"" if request.method == "HEAD" else raw
        return httpx.Response(200, content=body, headers=headers)

    @staticmethod
    def _blob(request: httpx.Request, repository: Repository, digest: str) -> httpx.Response:
        blob = repository.blobs.get(digest)
        if blob is None:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Length": str(len(blob))})
        if "Range" not in request.headers:
            return httpx.Response(200, content=blob)
        start, end = map(int, request.headers["Range"].removeprefix("bytes=").split("-"))
        headers = {"Content-Range": f"bytes {start}-{end}/{len(blob)}"}
        return httpx.Response(206, content=blob[start : end + 1], headers=headers)
