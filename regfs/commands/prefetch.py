"""``regfs prefetch IMAGE…``: bring whole images, or single layers, into the cache.

Application layer. It uses the cache as a mount does (a ``LayerStore`` on the same cache
dir), so a mount running meanwhile finds what it fetched; a layer being downloaded by a
mount is waited for, not fetched twice (the first pass holds a lock file). Each layer is
indexed (its TOC or zTOC, or its whole blob, checked against its digest) and then every
chunk or span of it is loaded and checked; the exit code says whether all of them are now
cached and verified. Layers of an image are fetched in parallel (``LayerStore`` bounds how
many whole blobs are downloaded at once).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

from regfs.cache.answers import tag_question, tags_question
from regfs.cache.pin_records import PinTooLarge
from regfs.commands import common
from regfs.commands.cached_image import NotInCache
from regfs.commands.pin import PrefetchPins, report, too_large
from regfs.commands.progress import Outcome, Reporter, progress_front_end
from regfs.domain import mediatypes
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, RegfsError
from regfs.domain.manifest import Descriptor, ImageManifest
from regfs.domain.platform import Platform
from regfs.domain.reference import image_reference, parse_image_reference
from regfs.layers.layer_ref import LayerRef, layer_refs
from regfs.layers.layer_store import LayerStore
from regfs.layers.mount_cache import open_mount_cache
from regfs.layers.toc_check import check_toc
from regfs.registry.client import RegistryClient
from regfs.registry.images import resolve_image
from regfs.tree.last_answers import note_repository
from regfs.tree.metadata import MAX_CONFIG_BYTES
from regfs.tree.xattrs import DIGEST_XATTR, MEDIA_TYPE_XATTR, STATUS_XATTR


@dataclass(frozen=True, slots=True)
class Target:
    """An image to prefetch, or one layer of it (``layer``: its position)."""

    host: str
    repository: str
    reference: str
    layer: int | None = None

    def __str__(self) -> str:
        name = image_reference(self.host, self.repository, self.reference)
        return name if self.layer is None else f"{name} layer {self.layer}"


def target_of(text: str) -> Target:
    """``HOST/REPO:TAG``, ``…@DIGEST``, or a path under a regfs mount: an image dir, or a
    layer dir ``i/`` (and anything below it). ValueError if it is none of those."""
    if not os.path.exists(text):
        return Target(*parse_image_reference(text))
    return _target_in_mount(Path(text).absolute())


def _target_in_mount(path: Path) -> Target:
    layer: int | None = None
    for directory in (path, *path.parents):
        if os.path.ismount(directory):
            break
        try:
            media_type = os.getxattr(directory, MEDIA_TYPE_XATTR).decode()
            digest = os.getxattr(directory, DIGEST_XATTR).decode()
        except OSError:
            continue
        if not mediatypes.is_image_manifest(media_type) and not mediatypes.is_index(media_type):
            layer = int(directory.name) if directory.name.isdigit() else layer
            continue
        root = next(p for p in directory.parents if os.path.ismount(p))
        if not _is_regfs(root):
            break
        host, *repository = directory.relative_to(root).parts[:-1]
        return Target(host, "/".join(repository), digest, layer)
    raise ValueError(f"{path} is not an image or layer dir of a regfs mount")


def _is_regfs(mountpoint: Path) -> bool:
    try:
        os.getxattr(mountpoint, STATUS_XATTR)
    except OSError:
        return False
    return True


async def prefetch(
    client: RegistryClient,
    store: LayerStore,
    targets: list[Target],
    platform: Platform,
    reporter: Reporter,
    *,
    pins: PrefetchPins | None = None,
) -> list[Outcome]:
    """Fetch and check every layer of ``targets``; an outcome per layer. With ``pins``,
    pin each image too (``commands/pin.py``): ``PinTooLarge`` if it does not fit."""
    outcomes: list[Outcome] = []
    resolved = [(target, *await _resolved(client, store, target, platform)) for target in targets]
    for target, image, subject, named in resolved:
        pin = None
        if pins is not None:
            pin = await pins.begin(target.host, target.repository, target.reference, named)
        layers = layer_refs(target.host, target.repository, subject.digest, image)
        for position, layer in enumerate(layers):
            if target.layer is not None and position != target.layer:
                continue
            name = f"{Target(target.host, target.repository, str(subject.digest))} " \
                   f"layer {position}"  # fmt: skip
            tag = None if ":" in target.reference else target.reference
            outcomes.append(Outcome(layer, name, tag=tag, pin=pin))
    reporter.started(len(outcomes), sum(o.layer.descriptor.size or 0 for o in outcomes))

    def received(layer: LayerRef, size: int) -> None:
        reporter.received(size)
        reporter.received_by_layer[layer] = reporter.received_by_layer.get(layer, 0) + size

    store.on_fetched = received
    async with trio.open_nursery() as nursery:
        for outcome in outcomes:
            nursery.start_soon(_one, store, outcome, reporter, pins, nursery.cancel_scope)
    if pins is not None:
        if pins.refused is not None:
            raise pins.refused
        await pins.finish(store.pieces)
    return outcomes


async def _resolved(
    client: RegistryClient, store: LayerStore, target: Target, platform: Platform
) -> tuple[ImageManifest, Descriptor, Digest]:
    """The target's image, its descriptor, and the digest the target names (the image's
    or its index's); what a mount needs to show it with the registry away is kept in the
    cache dir: its manifests and config by digest, and for a tag, the repository's tag list
    and the tag's target."""
    host, repository, reference = target.host, target.repository, target.reference
    if ":" not in reference:
        named = await client.resolve_tag(host, repository, reference)
        store.answers.save(tags_question(host, repository),
                           sorted(await client.list_tags(host, repository)))  # fmt: skip
        store.answers.save(tag_question(host, repository, reference), str(named))
        note_repository(store.answers, host, repository)
        reference = str(named)
    else:
        named = Digest.parse(reference)
    by_digest = store.by_digest
    image, subject = await resolve_image(
        client, host, repository, reference, platform, by_digest=by_digest.manifest
    )
    if image.config is not None:
        config = image.config
        limit = min(config.size or MAX_CONFIG_BYTES, MAX_CONFIG_BYTES)
        await by_digest.blob(host, repository, config.digest, size=config.size, max_bytes=limit)
    return image, subject, named


async def _one(
    store: LayerStore,
    outcome: Outcome,
    reporter: Reporter,
    pins: PrefetchPins | None,
    everything: trio.CancelScope,
) -> None:
    layer = outcome.layer
    try:
        disagreement = await check_toc(store, layer)
        index = await store.index(layer)
        if pins is not None and outcome.pin is not None:
            await pins.indexed(outcome.pin, layer)  # before its pieces are loaded
        if outcome.tag is not None:
            await store.layer_images.note(
                layer.digest, layer.host, layer.repository, layer.image, tag=outcome.tag
            )
        outcome.access = store.access(layer)
        await store.warm(layer, index)
        outcome.cached = await store.fetched(layer)
        if disagreement is not None:
            outcome.error = f"its TOC disagrees with its tar, which is shown: {disagreement}"
    except RegfsError as error:
        outcome.error = str(error)
    except PinTooLarge as error:
        outcome.error = f"not pinned: {error.reference} does not fit"
        everything.cancel()  # nothing more is fetched for pins that are taken back
    received = reporter.received_by_layer.get(layer, 0)
    reporter.received(max((layer.descriptor.size or 0) - received, 0))  # what was cached
    reporter.finished(outcome)


def run(args: argparse.Namespace) -> int:
    """``regfs prefetch``: 0 when every layer asked for is cached and verified (and, with
    ``--pin``, pinned)."""
    try:
        targets = [target_of(text) for text in args.images]
        config, credentials = common.command_setup(args, logging.ERROR)
        soci_v1_referrers = common.soci_v1_referrers(args)
    except (MalformedContent, ValueError) as error:
        print(f"regfs: {error}", file=sys.stderr)
        return 1
    if args.pin and any(target.layer is not None for target in targets):
        print("regfs: --pin pins whole images: name the image, not one of its layers",
              file=sys.stderr)  # fmt: skip
        return 2
    if not common.cache_dir_ready(args):
        return 1
    front = progress_front_end(quiet=args.quiet)
    pins = PrefetchPins(args.cache_dir, args.cache_size, args.platform) if args.pin else None

    async def fetch(client: RegistryClient) -> list[Outcome]:
        cache = open_mount_cache(client, args.cache_dir, args.cache_size)
        store = LayerStore(client, cache, soci_v1_referrers=soci_v1_referrers)
        try:
            return await prefetch(client, store, targets, args.platform, front.reporter, pins=pins)
        finally:
            store.close()

    try:
        with front:
            outcomes = common.with_client(config, credentials, fetch)
    except (RegfsError, NotInCache, PinTooLarge) as error:
        if pins is not None:
            pins.undo()
        message = too_large(error) if isinstance(error, PinTooLarge) else str(error)
        print(f"regfs: {message}", file=sys.stderr)
        return 1
    for outcome in outcomes:
        if outcome.error:
            print(f"regfs: {outcome.name}: {outcome.error}", file=sys.stderr)
    if pins is not None:
        report(pins.done, quiet=args.quiet)
    complete = all(outcome.complete for outcome in outcomes)
    return 0 if complete and (pins is None or pins.complete) else 1
