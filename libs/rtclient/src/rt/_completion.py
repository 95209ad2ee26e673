"""``rt completion bash``: a bash completion script, made from the command line's own
parser, so it always offers exactly the commands and options ``rt`` takes.

Install: ``source <(rt completion bash)`` in ``~/.bashrc`` (zsh: ``autoload
bashcompinit && bashcompinit`` first). Commands and options complete by name; anything
else (a cluster file, an output file) completes as a file name.
"""

from __future__ import annotations

import argparse
import shlex

__all__ = ["bash_script"]

_SCRIPT = """\
# bash completion for rt, made by `rt completion bash`
declare -gA _rt_words=(
{table}
)
_rt() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" path=rt word i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        [[ $word == -* ]] && continue
        [[ -n "${{_rt_words["$path $word"]+x}}" ]] && path="$path $word"
    done
    COMPREPLY=($(compgen -W "${{_rt_words[$path]}}" -- "$cur"))
}}
complete -o default -F _rt rt
"""


def _words(parser: argparse.ArgumentParser, path: str, table: dict[str, list[str]]) -> None:
    words: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words.append(name)
                _words(sub, f"{path} {name}".strip(), table)
        else:
            words.extend(s for s in action.option_strings if s.startswith("--"))
    table[path] = words


def bash_script(parser: argparse.ArgumentParser) -> str:
    table: dict[str, list[str]] = {}
    _words(parser, "rt", table)
    rows = "\n".join(
        f"    [{shlex.quote(path)}]={shlex.quote(' '.join(words))}"
        for path, words in sorted(table.items())
    )
    return _SCRIPT.format(table=rows)
