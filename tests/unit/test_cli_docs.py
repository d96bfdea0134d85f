"""The man page and the completion say what the parser says."""

from __future__ import annotations

from pathlib import Path

import pytest

from regfs.cli import build_parser
from regfs.commands.docs import bash_completion, commands, man_page


def test_every_command_and_option_is_in_both() -> None:
    parser = build_parser()
    page, completion = man_page(parser), bash_completion(parser)
    names = [name for name, _ in commands(parser)]
    assert {"mount", "umount", "prefetch", "status", "cache stats", "index push"} <= set(names)
    for name, sub in commands(parser):
        assert f'"{name}")' in completion
        for action in sub._actions:
            if action.dest == "help":
                continue  # every command has it
            for flag in action.option_strings:
                assert flag.replace("-", "\\-") in page, (name, flag)
                assert flag in completion


SHIPPED_PAGE = Path(__file__).resolve().parents[2] / "man/regfs.1"


def test_the_shipped_man_page_is_the_parser_s() -> None:
    """The wheel ships man/regfs.1 as it is in the tree (setuptools cannot make it): it
    must be what the parser makes now."""
    assert SHIPPED_PAGE.read_text() == man_page(build_parser()), (
        "man/regfs.1 is out of date: python -m regfs.commands.docs > man/regfs.1"
    )


def test_the_man_page_does_not_depend_on_who_makes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    page = man_page(build_parser())
    monkeypatch.setenv("HOME", "/home/someone-else")
    for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(name, f"/elsewhere/{name}")
    assert man_page(build_parser()) == page
