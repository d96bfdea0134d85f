"""The man page and the completion say what the parser says."""

from __future__ import annotations

from regfs.cli import build_parser
from regfs.cli_docs import bash_completion, commands, man_page


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
