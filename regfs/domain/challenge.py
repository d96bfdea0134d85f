"""``WWW-Authenticate`` challenges (RFC 7235) and ``Link`` pagination headers (RFC 8288).

Domain layer: pure, stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# Unquoted values are taken up to the next comma: some servers leave URLs unquoted.
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))\s*(,?)')
_SCHEME = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")
_LINK = re.compile(r'<([^>]*)>\s*((?:;\s*(?:[^;,"]|"[^"]*")+)*)')
"""One link of a ``Link`` header: its target, and its parameters up to the comma that
ends it (a comma inside a quoted value, as in ``title="a, b"``, does not)."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """One auth scheme the server offers, e.g. ``Bearer realm="…",service="…",scope="…"``."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def parse_challenges(header_values: list[str]) -> list[Challenge]:
    """All challenges in the given header values; unparseable tails are ignored.

    One header may hold several challenges (``Basic realm="x", Bearer realm="y"``), and a
    quoted value may contain commas (``scope="repository:a:pull,push"``).
    """
    challenges = []
    for value in header_values:
        position = 0
        while position < len(value):
            scheme = _SCHEME.match(value, position)
            if not scheme:
                break
            position = scheme.end()
            params: dict[str, str] = {}
            while param := _PARAM.match(value, position):
                raw = param.group(2) if param.group(2) is not None else param.group(3)
                params[param.group(1).lower()] = re.sub(r"\\(.)", r"\1", raw)
                position = param.end()
                if not param.group(4):
                    break
            challenges.append(Challenge(scheme.group(1).lower(), params))
            position = _skip_commas(value, position)
    return challenges


def _skip_commas(value: str, position: int) -> int:
    while position < len(value) and value[position] in ", \t":
        position += 1
    return position


def next_link(header_values: list[str]) -> str | None:
    """The target of the ``rel="next"`` link, as written (possibly relative)."""
    for value in header_values:
        for match in _LINK.finditer(value):
            params = match.group(2).lower()
            if re.search(r';\s*rel\s*=\s*"?([^";]*\s)?next(\s[^";]*)?"?', params):
                return match.group(1)
    return None
