"""``regfs index push IMAGE``: give an image a SOCI index, so that mounts read it lazily.

Application layer. For each gzip layer of the image (of the chosen platform, for an
index) it downloads the blob, checks it against its digest, makes a zTOC
(``layers/ztoc_builder.py``: checkpoints every span, each span checked to inflate back to
the layer's bytes), and pushes the zTOCs and the SOCI v1 index that lists them as a
referrer of the image (``registry/push.py`` says how they are sent).
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trio

from regfs.commands import common
from regfs.domain.artifacts import EMPTY_CONFIG
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, RegfsError
from regfs.domain.manifest import Descriptor
from regfs.domain.platform import Platform
from regfs.domain.reference import parse_image_reference
from regfs.domain.soci import (
    SOCI_INDEX_V1,
    ZTOC_MEDIA_TYPE,
    soci_index_manifest,
)
from regfs.layers.blob_sink import VerifyingSink
from regfs.layers.layer_ref import LayerRef
from regfs.layers.ztoc_builder import BUILD_TOOL, build_ztoc
from regfs.registry.client import RegistryClient
from regfs.registry.images import resolve_image
from regfs.registry.push import push_blob, push_referrer


@dataclass(frozen=True, slots=True)
class Pushed:
    index: Digest
    ztocs: list[tuple[Descriptor, Descriptor]]
    """(zTOC, layer) pairs."""
    skipped: list[tuple[Descriptor, str]]
    """Layers without a zTOC, and why."""
    image: Digest


async def push_index(
    client: RegistryClient,
    host: str,
    repository: str,
    reference: str,
    *,
    platform: Platform,
    span_size: int,
    min_layer_size: int,
) -> Pushed:
    """Make the zTOCs of ``reference``'s gzip layers of ``min_layer_size`` bytes or more,
    and push them with a SOCI v1 index that refers to the image."""
    image, subject = await resolve_image(client, host, repository, reference, platform)
    ztocs: list[tuple[Descriptor, Descriptor]] = []
    skipped: list[tuple[Descriptor, str]] = []
    with tempfile.TemporaryDirectory(prefix="regfs-index-") as workdir:
        for layer in image.layers:
            if not layer.media_type.endswith("gzip"):
                skipped.append((layer, "not gzip"))
            elif (layer.size or 0) < min_layer_size:
                skipped.append((layer, f"smaller than {min_layer_size} bytes"))
            else:
                data = await _ztoc_of(
                    client, host, repository, layer, Path(workdir), span_size=span_size
                )
                digest = await push_blob(client, host, repository, data)
                ztocs.append((Descriptor(ZTOC_MEDIA_TYPE, digest, len(data)), layer))
    if not ztocs:
        reasons = "; ".join(f"{layer.digest}: {why}" for layer, why in skipped)
        raise MalformedContent(
            f"{host}/{repository}@{subject.digest}: no layer to index ({reasons}; "
            "--min-layer-size sets the smallest)"
        )
    await push_blob(client, host, repository, EMPTY_CONFIG)
    index = soci_index_manifest(ztocs, subject, span_size, BUILD_TOOL)
    index_digest = await push_referrer(
        client, host, repository, index, subject=subject.digest, artifact_type=SOCI_INDEX_V1
    )
    return Pushed(index_digest, ztocs, skipped, subject.digest)


async def _ztoc_of(
    client: RegistryClient,
    host: str,
    repository: str,
    layer: Descriptor,
    workdir: Path,
    *,
    span_size: int,
) -> bytes:
    """Download the layer, check it against its digest, and make its zTOC."""
    blob = workdir / secrets.token_hex(8)
    try:
        with open(blob, "wb") as file:
            sink = VerifyingSink(file, LayerRef(host, repository, layer), cache=None)
            await client.download_blob(host, repository, layer.digest, sink, urls=layer.urls)
            await sink.finish()
        return await trio.to_thread.run_sync(build_ztoc, blob, span_size)
    finally:
        blob.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    """Push a SOCI index for ``args.image``; a line per layer on stdout, errors on stderr."""
    try:
        host, repository, reference = parse_image_reference(args.image)
        config, credentials = common.command_setup(args, logging.WARNING)
    except (MalformedContent, ValueError) as error:
        print(f"regfs: {error}", file=sys.stderr)
        return 1

    async def push(client: RegistryClient) -> Pushed:
        return await push_index(
            client, host, repository, reference, platform=args.platform,
            span_size=args.span_size, min_layer_size=args.min_layer_size,
        )  # fmt: skip

    try:
        pushed = common.with_client(config, credentials, push)
    except RegfsError as error:
        print(f"regfs: {error}", file=sys.stderr)
        return 1
    for ztoc, layer in pushed.ztocs:
        print(f"{layer.digest}: zTOC {ztoc.digest} ({ztoc.size} bytes)")
    for layer, reason in pushed.skipped:
        print(f"{layer.digest}: no zTOC ({reason})")
    print(f"SOCI v1 index {pushed.index} pushed for {host}/{repository}@{pushed.image}")
    print("mounts and regfs prefetch use it with --soci-v1-referrers (see `regfs mount --help`)")
    return 0
