"""``regfs index push-start IMAGE RECORD``: tell every mount what IMAGE's start reads.

Application layer. Reads the record file a user has (ctr-remote's ``--record-out`` form,
or one path per line), and pushes it as a start record: an artifact that refers to the
image (of the chosen platform, for an index). ``domain/start_record.py`` says what it is,
``layers/start_reads.py`` how a mount uses it; ``registry/push.py`` how it is sent.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from regfs.commands import common
from regfs.domain.artifacts import EMPTY_CONFIG
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, RegfsError
from regfs.domain.manifest import Descriptor
from regfs.domain.platform import Platform
from regfs.domain.reference import parse_image_reference
from regfs.domain.start_record import (
    START_RECORD,
    paths_of_record_file,
    record_document,
    start_record_manifest,
)
from regfs.registry.client import RegistryClient
from regfs.registry.images import resolve_image
from regfs.registry.push import push_blob, push_referrer


@dataclass(frozen=True, slots=True)
class Pushed:
    record: Digest
    image: Digest


async def push_start_record(
    client: RegistryClient,
    host: str,
    repository: str,
    reference: str,
    *,
    platform: Platform,
    paths: Sequence[bytes],
) -> Pushed:
    """Push a start record naming ``paths`` as a referrer of ``reference``'s image."""
    _, subject = await resolve_image(client, host, repository, reference, platform)
    document = record_document(paths)
    blob = await push_blob(client, host, repository, document)
    await push_blob(client, host, repository, EMPTY_CONFIG)
    manifest = start_record_manifest(Descriptor(START_RECORD, blob, len(document)), subject)
    record = await push_referrer(
        client, host, repository, manifest, subject=subject.digest, artifact_type=START_RECORD
    )
    return Pushed(record, subject.digest)


def run(args: argparse.Namespace) -> int:
    """Push the start record; what was pushed on stdout, errors on stderr."""
    try:
        host, repository, reference = parse_image_reference(args.image)
        # a name not in UTF-8 comes back as the bytes --record-reads wrote
        record = sys.stdin.buffer.read() if args.record == "-" else Path(args.record).read_bytes()
        text = record.decode("utf-8", errors="surrogateescape")
        paths = paths_of_record_file(text)
        if not paths:
            raise ValueError("it names no file")
        config, credentials = common.command_setup(args, logging.WARNING)
    except (MalformedContent, ValueError, OSError) as error:
        print(f"regfs: {args.record}: {error}", file=sys.stderr)
        return 1

    async def push(client: RegistryClient) -> Pushed:
        return await push_start_record(
            client, host, repository, reference, platform=args.platform, paths=paths
        )

    try:
        pushed = common.with_client(config, credentials, push)
    except RegfsError as error:
        print(f"regfs: {error}", file=sys.stderr)
        return 1
    print(f"start record {pushed.record} ({len(paths)} files) pushed for "
          f"{host}/{repository}@{pushed.image}")  # fmt: skip
    print("mounts fetch those files together when the image is first read")
    return 0
