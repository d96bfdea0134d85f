"""The last good answer to each question whose answer changes: catalogs, tag lists, tags.

Cache layer: imports nothing from regfs above it. A mount asks the registry these again
every ``--metadata-ttl``; what it last heard is kept here, so that while the registry
cannot be reached the mount can show it, marked stale (``regfs.tree.metadata``).

- one file per question, ``answers/<sha256 of the question, 40 hex>.json``: the question
  itself (read back only if it matches), the answer (any JSON value) and when it was heard;
- written when the answer changes, or when the kept one is older than ``RENEW_AFTER``
  seconds (so "stale since" is never much earlier than the last good answer, and a busy
  mount does not write on every TTL); atomically, best effort (a full disk loses only the
  fallback);
- the last ``MEMORY`` questions saved or loaded are also held in memory.

They count against ``--cache-size`` and are evicted least recently used first with the
chunks (``chunks.py``), rather than under a bound of their own: a tag list may be as large
as a chunk, the bound is the user's one figure for the whole dir, and an answer's mtime is
already its recency (renewed as the registry gives it again, at most ``RENEW_AFTER`` old
while in use), so an answer last heard months ago goes before a chunk read today. What a
pinned image needs to be found while its registry is away (``pinned_questions``) is kept.
A write is counted as it is made (``grew``), without evicting there: answers are saved on
the event loop, and the next chunk written evicts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cachetools

from regfs.cache.layout import CacheLayout
from regfs.cache.temporaries import write_atomically
from regfs.domain.digest import Digest

log = logging.getLogger(__name__)

RENEW_AFTER = 60.0
MEMORY = 4096
MAX_ANSWER_BYTES = 64 << 20
"""As large as a registry listing may be (``registry/client.py``)."""

Question = tuple[str, ...]
"""What was asked, e.g. ``("tags", host, repository)``."""
Answer = None | str | list[str]


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    answer: Answer
    at: float
    """When the registry gave it (epoch seconds)."""


def catalog_question(host: str) -> Question:
    return ("catalog", host)


def tags_question(host: str, repository: str) -> Question:
    return ("tags", host, repository)


def tag_question(host: str, repository: str, tag: str) -> Question:
    return ("tag", host, repository, tag)


def repositories_question(host: str) -> Question:
    """Not asked of a registry: the repositories whose tag lists the cache dir keeps, so
    that the host's dir leads to them while the registry (and its catalog) is away."""
    return ("repositories", host)


def v1_index_question(host: str, repository: str, image: Digest) -> Question:
    """What ``answers/`` keeps the last SOCI v1 index found for ``image`` under."""
    return ("soci v1 index", host, repository, str(image))


def pinned_questions(host: str, repository: str, reference: str, image: Digest) -> list[Question]:
    """The answers a pinned image (``image``, named by ``reference``: a tag or a digest)
    is found through while its registry is away: its repository among the host's (the
    host's catalog, or the repositories whose tag lists are kept), the repository's tags
    and, for a tag, its target; its SOCI v1 index, if it has one."""
    questions = [
        catalog_question(host),
        repositories_question(host),
        tags_question(host, repository),
        v1_index_question(host, repository, image),
    ]
    if ":" not in reference:
        questions.append(tag_question(host, repository, reference))
    return questions


def file_name(question: Question) -> str:
    """The file of ``answers/`` that keeps the answer to ``question``."""
    return hashlib.sha256(json.dumps(question).encode()).hexdigest()[:40] + ".json"


class KeptAnswers:
    def __init__(self, layout: CacheLayout, grew: Callable[[int], None] | None = None) -> None:
        """``grew`` counts the bytes of each answer written (``ChunkCache.count_written``;
        None where no cache bound is kept: ``regfs cache`` reading, tests)."""
        self._directory = layout.answers
        self._memory: cachetools.LRUCache[Question, KeptAnswer | None] = cachetools.LRUCache(MEMORY)
        self._grew = grew

    def _path(self, question: Question) -> Path:
        return self._directory / file_name(question)

    def save(self, question: Question, answer: Answer) -> None:
        """The registry answered ``question`` just now. Blocking; never raises OSError."""
        kept = self.load(question)
        now = time.time()
        if kept is not None and kept.answer == answer and now - kept.at < RENEW_AFTER:
            return
        self._memory[question] = KeptAnswer(answer, now)
        record = json.dumps({"question": list(question), "answer": answer, "at": now}).encode()
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            write_atomically(self._path(question), record, durable=False)
            if self._grew is not None:
                self._grew(len(record))
        except OSError as error:
            log.info("last answer to %s not kept: %s", " ".join(question), error)

    def load(self, question: Question) -> KeptAnswer | None:
        """The last answer kept for ``question``, or None. Blocking (a read, the first time)."""
        if question in self._memory:
            return self._memory[question]
        kept = self._read(question)
        self._memory[question] = kept
        return kept

    def _read(self, question: Question) -> KeptAnswer | None:
        path = self._path(question)
        try:
            with open(path, "rb") as file:
                record = json.loads(file.read(MAX_ANSWER_BYTES))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.info("last answer %s unreadable (%s): not used", path, error)
            return None
        if not isinstance(record, dict) or record.get("question") != list(question):
            return None
        answer, at = record.get("answer"), record.get("at")
        if not _is_answer(answer) or not isinstance(at, int | float):
            return None
        return KeptAnswer(answer, float(at))


def _is_answer(value: object) -> bool:
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
