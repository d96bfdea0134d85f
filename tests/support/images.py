"""Test images made from real files with umoci, pushed with skopeo or the registry's API."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def run(*command: str | Path) -> str:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed: {result.stderr.strip()}")
    return result.stdout


def build_image(
    layout: Path, tag: str, files: dict[str, bytes], architecture: str = "amd64"
) -> None:
    """An image in the OCI layout ``layout`` at ``tag``: one layer holding ``files``."""
    if not (layout / "index.json").exists():
        run("umoci", "init", "--layout", layout)
    image = f"{layout}:{tag}"
    run("umoci", "new", "--image", image)
    run("umoci", "config", "--image", image, "--architecture", architecture, "--os", "linux")
    bundle = layout.parent / f"bundle-{tag}"
    run("umoci", "unpack", "--image", image, bundle)
    for name, data in files.items():
        path = bundle / "rootfs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    run("umoci", "repack", "--image", image, bundle)
    shutil.rmtree(bundle)


def _add_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def build_index(layout: Path, tag: str, platform_tags: dict[str, tuple[str, str]]) -> None:
    """An OCI index at ``tag`` over images already in ``layout``: {tag: (os, arch)}."""
    index = json.loads((layout / "index.json").read_text())
    by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    manifests = []
    for image_tag, (os_name, architecture) in platform_tags.items():
        descriptor = {k: v for k, v in by_tag[image_tag].items() if k != "annotations"}
        descriptor["platform"] = {"os": os_name, "architecture": architecture}
        manifests.append(descriptor)
    blob = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
    descriptor = {"mediaType": OCI_INDEX, **_add_blob(layout, blob.encode())}
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index["manifests"].append(descriptor)
    (layout / "index.json").write_text(json.dumps(index))


def push(layout: Path, tag: str, destination: str, *options: str) -> None:
    """``skopeo copy`` from the layout to ``docker://destination`` (e.g. ``--format v2s1``)."""
    run(
        "skopeo", "copy", "--quiet", "--dest-tls-verify=false", *options,
        f"oci:{layout}:{tag}", f"docker://{destination}",
    )  # fmt: skip


def registry_request(
    url: str, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


ACCEPT_ALL = ", ".join(
    [
        OCI_INDEX,
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ]
)


def get_manifest(registry_url: str, repository: str, reference: str) -> tuple[bytes, str, str]:
    """The manifest bytes, Content-Type and Docker-Content-Digest the registry serves."""
    _, headers, body = registry_request(
        f"{registry_url}/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT_ALL}
    )
    return body, headers["Content-Type"], headers["Docker-Content-Digest"]


def get_blob(registry_url: str, repository: str, digest: str) -> bytes:
    return registry_request(f"{registry_url}/v2/{repository}/blobs/{digest}")[2]


def tag_copies(registry_url: str, repository: str, source_tag: str, tags: list[str]) -> None:
    """Point more tags at one manifest with PUTs: far faster than a skopeo push per tag."""
    body, content_type, _ = get_manifest(registry_url, repository, source_tag)
    for tag in tags:
        registry_request(
            f"{registry_url}/v2/{repository}/manifests/{tag}",
            method="PUT",
            data=body,
            headers={"Content-Type": content_type},
        )


def repository_copies(registry_url: str, source: str, tag: str, repositories: list[str]) -> None:
    """Copy an image into more repositories by cross-repository blob mounts and a PUT."""
    body, content_type, _ = get_manifest(registry_url, source, tag)
    manifest = json.loads(body)
    digests = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]
    for repository in repositories:
        for digest in digests:
            registry_request(
                f"{registry_url}/v2/{repository}/blobs/uploads/?mount={digest}&from={source}",
                method="POST",
                data=b"",
            )
        registry_request(
            f"{registry_url}/v2/{repository}/manifests/{tag}",
            method="PUT",
            data=body,
            headers={"Content-Type": content_type},
        )


def schema1_payload(signed: bytes) -> bytes:
    """What a signed schema1 manifest's digest covers (per its first protected header)."""
    protected = json.loads(signed)["signatures"][0]["protected"]
    header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
    tail = base64.urlsafe_b64decode(header["formatTail"] + "=" * (-len(header["formatTail"]) % 4))
    return signed[: header["formatLength"]] + tail


def catalog(registry_url: str) -> list[str]:
    """Every repository, following the registry's own pagination."""
    names: list[str] = []
    url: str | None = f"{registry_url}/v2/_catalog"
    while url:
        _, headers, body = registry_request(url)
        names += json.loads(body)["repositories"]
        link = headers.get("Link")
        url = registry_url + link.split(">")[0].lstrip("<") if link else None
    return names
