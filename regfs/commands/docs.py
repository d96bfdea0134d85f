"""The man page and the bash completion, both made from the argparse parser, so that they
say what ``--help`` says and cannot drift from it.

Application layer, pure (a parser in, text out). ``regfs completion bash`` prints the
completion; ``python -m regfs.commands.docs`` prints the man page. The page is shipped in the
wheel as ``share/man/man1/regfs.1`` (so ``man regfs`` works for pip and pipx users) from
``man/regfs.1``, a generated file kept in the source tree: setuptools copies data files
but cannot run regfs's code while building without a build step of our own (a custom
command, a build backend) that would have to import the parser, hence its dependencies,
in the isolated build environment. ``tests/unit/test_cli_docs.py`` regenerates the page
and fails when the committed one differs. So the page must not depend on where or when
it is made: no date (the version says which page it is), no path of the builder's home.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from regfs import __version__
from regfs.commands.parser import build_parser

FILES = (
    ("~/.config/regfs/config.toml", "regfs's own settings: aliases for registries below a "
     "path prefix ([aliases]), SOCI v1 referrers allowed ([soci] v1-referrers)."),
    ("~/.docker/config.json, ~/.config/containers/auth.json",
     "credentials, read as docker, podman and skopeo read them (credential helpers too)."),
    ("/etc/containers/registries.conf, /etc/containers/certs.d",
     "mirrors, blocked and insecure registries, TLS certificates."),
    ("~/.cache/regfs", "the cache dir: verified chunks, layer indexes, blobs being indexed."),
)  # fmt: skip


def commands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(``"cache prune"``, its parser) for every command, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    for inner, inner_parser in commands(sub):
                        yield f"{name} {inner}", inner_parser
                else:
                    yield name, sub


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("-", "\\-").replace("'", "\\(aq")


def man_page(parser: argparse.ArgumentParser) -> str:
    """The parser as a roff man page, section 1."""
    lines = [
        f'.TH REGFS 1 "" "regfs {__version__}" "User Commands"',
        ".SH NAME",
        f"regfs \\- {_escape(parser.description or '')}",
        ".SH SYNOPSIS",
    ]
    for name, sub in commands(parser):
        usage = " ".join(sub.format_usage().removeprefix("usage: ").split())
        lines += [".PP", f"\\fBregfs {_escape(name)}\\fR {_escape(usage.split(name, 1)[-1])}"]
    lines += [".SH COMMANDS"]
    for name, sub in commands(parser):
        lines += [f'.SS "regfs {_escape(name)}"']
        if sub.description:
            lines += [_escape(sub.description)]
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            flags = ", ".join(f"\\fB{_escape(flag)}\\fR" for flag in action.option_strings)
            if not flags:
                flags = f"\\fI{_escape(str(action.metavar or action.dest)).upper()}\\fR"
            elif action.nargs != 0:
                flags += f" \\fI{_escape(str(action.metavar or action.dest.upper()))}\\fR"
            help_text = (action.help or "").replace("%(default)s", str(action.default))
            lines += [".TP", flags, _escape(help_text)]
    lines += [".SH FILES"]
    for path, text in FILES:
        lines += [".TP", f"\\fI{_escape(path)}\\fR", _escape(text)]
    lines += [
        ".SH SEE ALSO",
        "\\fBmount\\fR(8), \\fBfusermount3\\fR(1), \\fBskopeo\\fR(1); the README and docs/ of "
        "the source tree (configuration, design, troubleshooting).",
    ]
    return "\n".join(lines) + "\n"


def bash_completion(parser: argparse.ArgumentParser) -> str:
    """A bash completion function for ``regfs``: commands, then each one's options, then
    file names."""
    cases = []
    for name, sub in commands(parser):
        options = sorted(flag for a in sub._actions for flag in a.option_strings)
        cases.append(f'        "{name}") options="{" ".join(options)}" ;;')
    tops = sorted({name.split()[0] for name, _ in commands(parser)})
    nested: dict[str, list[str]] = {}
    for name, _ in commands(parser):
        if " " in name:
            outer, inner = name.split(" ", 1)
            nested.setdefault(outer, []).append(inner)
    nested_cases = [f'        {outer}) commands="{" ".join(inners)}" ;;'
                    for outer, inners in sorted(nested.items())]  # fmt: skip
    return f"""# bash completion for regfs (made by `regfs completion bash`)
_regfs() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" command commands options
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "{" ".join(tops)} --help --version" -- "$cur"))
        return
    fi
    command="${{COMP_WORDS[1]}}"
    case "$command" in
{chr(10).join(nested_cases)}
    esac
    if [[ -n $commands ]]; then
        if [[ $COMP_CWORD -eq 2 ]]; then
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
            return
        fi
        command="$command ${{COMP_WORDS[2]}}"
    fi
    case "$command" in
{chr(10).join(cases)}
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$options" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o filenames -F _regfs regfs
"""


def completion(args: argparse.Namespace) -> int:
    print(bash_completion(build_parser()), end="")
    return 0


if __name__ == "__main__":
    sys.stdout.write(man_page(build_parser()))
