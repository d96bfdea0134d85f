"""Catalogs, tag lists and tags: fresh from the registry, or its last answer while it is away.

Tree layer. A registry that cannot be reached (``regfs.cache.reachability``) does not
empty the tree: the last good answer kept in the cache dir (``regfs.cache.answers``) is
shown instead, logged once per question, and marked until a fresh answer replaces it:
``user.regfs.stale`` on the host dir (its catalog) and on the repository dir (its tag list
and the tags whose targets are stale; a tag is a symlink, whose ``user.*`` attributes
Linux does not read), and a count in ``regfs status``. A refusal or "unknown" from a
registry that answers is passed on as it is: revoked access and deleted tags take effect
at once. ``StalePolicy`` turns stale answers off (``--no-stale``) or bounds their age
(``--max-stale``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from regfs.cache.answers import (
    Answer,
    KeptAnswer,
    KeptAnswers,
    Question,
    catalog_question,
    repositories_question,
    tags_question,
)
from regfs.cache.reachability import Reachability

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StalePolicy:
    allowed: bool = True
    max_age: float = math.inf
    """Seconds since the registry gave an answer after which it is no longer shown."""


ALWAYS_STALE = StalePolicy()
"""The default: the last answer is shown however old it is."""


class LastAnswers:
    def __init__(self, kept: KeptAnswers, reach: Reachability, policy: StalePolicy) -> None:
        self._kept = kept
        self._reach = reach
        self._policy = policy
        self._stale: dict[Question, float] = {}
        """Questions answered from the cache, and when the registry gave that answer."""
        self.served_stale = 0
        """Answers served stale since the mount started."""

    async def ask(
        self, host: str, question: Question, fetch: Callable[[], Awaitable[Answer]]
    ) -> Answer:
        """``fetch()``'s answer, kept for later; or, when ``host`` cannot be reached, the
        last one kept, if the policy allows it."""
        kept = self._usable(question)  # small files, on the loop (see layers/by_digest.py)
        answer = await self._reach.ask(host, fetch, kept)
        if isinstance(answer, KeptAnswer):
            self.served_stale += 1
            if question not in self._stale:
                log.warning("%s: %s cannot be reached: showing its answer of %s",
                            " ".join(question), host, _utc(answer.at))  # fmt: skip
            self._stale[question] = answer.at
            return answer.answer
        self._stale.pop(question, None)
        self._kept.save(question, answer)
        return answer

    def kept(self, question: Question) -> bool:
        """True if an answer to ``question`` is kept that an outage would show."""
        return self._usable(question) is not None

    def _usable(self, question: Question) -> KeptAnswer | None:
        if not self._policy.allowed:
            return None
        kept = self._kept.load(question)
        if kept is None or time.time() - kept.at > self._policy.max_age:
            return None
        return kept

    def kept_repositories(self, host: str) -> set[str]:
        """Repositories of ``host`` whose tag lists are kept (see ``note_repository``)."""
        kept = self._kept.load(repositories_question(host))
        return set(kept.answer) if kept is not None and isinstance(kept.answer, list) else set()

    def stale_since(self, question: Question) -> float | None:
        """When the registry gave the answer shown for ``question``, if it is stale."""
        return self._stale.get(question)

    def stale_questions(self) -> list[Question]:
        return list(self._stale)


def note_repository(kept: KeptAnswers, host: str, repository: str) -> None:
    """``repository``'s tag list is kept: list it among ``host``'s (blocking, small)."""
    known = kept.load(repositories_question(host))
    names = known.answer if known is not None and isinstance(known.answer, list) else []
    if repository not in names:
        kept.save(repositories_question(host), sorted([*names, repository]))


def stale_marks(answers: LastAnswers, host: str, path: str) -> dict[str, object]:
    """What ``user.regfs.stale`` says of the host dir (``path == ""``) or a repository dir:
    since when its catalog, its tag list and each of its tags' targets have been stale."""
    marks: dict[str, object] = {}
    targets: dict[str, str] = {}
    for question in answers.stale_questions():
        since = answers.stale_since(question)
        if since is None:
            continue
        if not path and question == catalog_question(host):
            marks["catalog"] = _utc(since)
        elif path and question == tags_question(host, path):
            marks["tags"] = _utc(since)
        elif path and question[:3] == ("tag", host, path):
            targets[question[3]] = _utc(since)
    if targets:
        marks["targets"] = dict(sorted(targets.items()))
    return marks


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
