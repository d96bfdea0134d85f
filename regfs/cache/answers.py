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
Not counted against ``--cache-size``: one file per name asked about.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cachetools

from regfs.cache.layout import CacheLayout
from regfs.cache.temporaries import write_atomically

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


class KeptAnswers:
    def __init__(self, layout: CacheLayout) -> None:
        self._directory = layout.answers
        self._memory: cachetools.LRUCache[Question, KeptAnswer | None] = cachetools.LRUCache(MEMORY)

    def _path(self, question: Question) -> Path:
        name = hashlib.sha256(json.dumps(question).encode()).hexdigest()[:40]
        return self._directory / f"{name}.json"

    def save(self, question: Question, answer: Answer) -> None:
        """The registry answered ``question`` just now. Blocking; never raises OSError."""
        kept = self.load(question)
        now = time.time()
        if kept is not None and kept.answer == answer and now - kept.at < RENEW_AFTER:
            return
        self._memory[question] = KeptAnswer(answer, now)
        record = {"question": list(question), "answer": answer, "at": now}
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            write_atomically(self._path(question), json.dumps(record).encode(), durable=False)
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
