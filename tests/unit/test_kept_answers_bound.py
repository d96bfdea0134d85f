"""The last answers and confirmations count against ``--cache-size`` and are evicted least
recently used first with the chunks, but for those a pinned image is shown through while
its registry is away (found by a review: ``answers/`` and ``confirmed/`` grew without
bound)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from regfs.cache.answers import (
    KeptAnswers,
    catalog_question,
    repositories_question,
    tag_question,
    tags_question,
)
from regfs.cache.chunks import ChunkCache
from regfs.cache.confirmations import Confirmations
from regfs.cache.layout import CacheLayout
from regfs.cache.pin_records import Pin, PinnedLayer
from regfs.cache.pins import Pins
from regfs.domain.digest import Digest

HOST, REPOSITORY = "127.0.0.1:5000", "app"
IMAGE = Digest.parse("sha256:" + "1" * 64)
LAYER = Digest.parse("sha256:" + "2" * 64)
CONFIG = "3" * 64
OTHER = Digest.parse("sha256:" + "4" * 64)


def aged(directory: Path, seconds: float) -> None:
    """Every file under ``directory`` last used ``seconds`` ago."""
    for path in directory.rglob("*"):
        if path.is_file():
            os.utime(path, (time.time() - seconds, time.time() - seconds))


def fill(cache: ChunkCache, count: int, size: int) -> None:
    for number in range(count):
        data = number.to_bytes(4, "big") * (size // 4)
        cache.put(hashlib.sha256(data).digest(), data)


def test_answers_and_confirmations_count_and_go_least_recently_used_first(
    tmp_path: Path,
) -> None:
    layout = CacheLayout(tmp_path)
    cache = ChunkCache(layout, 100_000)
    answers = KeptAnswers(layout, cache.count_written)
    confirmations = Confirmations(layout, cache.count_written)
    before = cache.usage()
    answers.save(tags_question(HOST, REPOSITORY), [f"v{n}" for n in range(2000)])
    confirmations.add(HOST, REPOSITORY, OTHER)
    kept = sum(p.stat().st_size for d in ("answers", "confirmed")
               for p in (tmp_path / d).rglob("*") if p.is_file())  # fmt: skip
    assert cache.usage() >= before + kept > 10_000  # counted as written
    aged(tmp_path / "answers", 3600)
    aged(tmp_path / "confirmed", 3600)
    fill(cache, 10, 9_000)  # over the bound: the oldest go first
    assert cache.usage() <= cache.max_bytes
    assert KeptAnswers(layout).load(tags_question(HOST, REPOSITORY)) is None
    assert Confirmations(layout).get(HOST, REPOSITORY, OTHER) is None


def test_what_a_pinned_image_is_shown_through_offline_is_kept(tmp_path: Path) -> None:
    layout = CacheLayout(tmp_path)
    cache = ChunkCache(layout, 100_000)
    pin = Pin(f"{HOST}/{REPOSITORY}:1", str(IMAGE), str(IMAGE), "linux/amd64", time.time(),
              {CONFIG: 100}, (PinnedLayer(str(LAYER), 1000),))  # fmt: skip
    Pins(layout).save(pin, cache_size=None)
    answers = KeptAnswers(layout, cache.count_written)
    confirmations = Confirmations(layout, cache.count_written)
    pinned_questions = [tags_question(HOST, REPOSITORY), tag_question(HOST, REPOSITORY, "1"),
                        repositories_question(HOST), catalog_question(HOST)]  # fmt: skip
    for question in pinned_questions:
        answers.save(question, ["app"] if question[0] != "tag" else str(IMAGE))
    answers.save(tags_question(HOST, "other"), ["2"])
    for digest in (IMAGE, LAYER, Digest.parse(f"sha256:{CONFIG}")):
        confirmations.add(HOST, REPOSITORY, digest)
    confirmations.add(HOST, REPOSITORY, OTHER)
    confirmations.add(HOST, "other", IMAGE)  # the same image in another repository
    aged(tmp_path / "answers", 3600)
    aged(tmp_path / "confirmed", 3600)
    fill(cache, 12, 9_000)
    assert cache.usage() <= cache.max_bytes
    fresh = KeptAnswers(layout)
    assert all(fresh.load(question) is not None for question in pinned_questions)
    assert fresh.load(tags_question(HOST, "other")) is None
    kept = Confirmations(layout)
    for digest in (IMAGE, LAYER, Digest.parse(f"sha256:{CONFIG}")):
        assert kept.get(HOST, REPOSITORY, digest) is not None, digest
    assert kept.get(HOST, REPOSITORY, OTHER) is None
    assert kept.get(HOST, "other", IMAGE) is None
