"""The front door cannot drift from the code: every `abcjax` command the README quotes parses with the
real command line, the tour covers every command, and every link in the README and docs/ leads somewhere."""

import re
import shlex

import pytest

from abcjax import cli
from conftest import REPO

README = REPO / "README.md"
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")  # a block in one of these holds commands only
PROMPT = "$ "  # in a block of commands and their output, each command line starts with it
OPERATORS = {"&&", "||", ";", "|", "&"}  # between the simple commands of one shell line
REDIRECTIONS = {">", ">>", "<", "2>", ">&", "&>"}  # each followed by a file name, which is no argument
ENVIRONMENT_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def code_blocks(markdown: str) -> list[tuple[str, list[str]]]:
    """(info string, lines) of each fenced code block."""
    blocks = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL):
        blocks.append((match.group(1), match.group(2).splitlines()))
    return blocks


def command_lines(language: str, lines: list[str]) -> list[str]:
    """The shell command lines of one block, continuation lines joined, output lines left out.

    A line is a command when it starts with the prompt `$ `, when the whole block is a shell block
    (```bash), or when it starts with `abcjax `; output never does (abcjax's errors start `abcjax:`).
    """
    joined = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + line
        else:
            joined.append(line)
    commands = []
    for line in joined:
        if line.startswith(PROMPT):
            commands.append(line[len(PROMPT) :])
        elif language in SHELL_LANGUAGES or line.startswith("abcjax "):
            commands.append(line)
    return [command for command in commands if command.strip() and not command.lstrip().startswith("#")]


def abcjax_invocations(command_line: str) -> list[list[str]]:
    """The arguments of each `abcjax` (or `.venv/bin/abcjax`) run in a shell line, whatever chains,
    pipes, redirections or environment variables surround it."""
    lexer = shlex.shlex(command_line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    simple_commands: list[list[str]] = [[]]
    for token in lexer:
        if token in OPERATORS:
            simple_commands.append([])
        else:
            simple_commands[-1].append(token)
    invocations = []
    for words in simple_commands:
        words = _without_redirections(words)
        while words and ENVIRONMENT_ASSIGNMENT.match(words[0]):
            words = words[1:]
        if words and words[0].rsplit("/", 1)[-1] == "abcjax":
            invocations.append(words[1:])
    return invocations


def _without_redirections(words: list[str]) -> list[str]:
    kept, skip_next = [], False
    for word in words:
        if skip_next:
            skip_next = False
        elif word in REDIRECTIONS:
            skip_next = True
        else:
            kept.append(word)
    return kept


def readme_invocations() -> list[list[str]]:
    """Every abcjax command line quoted in the README's code blocks, as argument lists."""
    invocations = []
    for language, lines in code_blocks(README.read_text(encoding="utf-8")):
        for command_line in command_lines(language, lines):
            invocations.extend(abcjax_invocations(command_line))
    return invocations


@pytest.mark.parametrize("arguments", readme_invocations(), ids=shlex.join)
def test_every_abcjax_command_quoted_in_the_readme_parses_with_the_real_command_line(arguments):
    try:
        parsed, _ = cli.parse_command_line(arguments)
    except SystemExit as exit_:
        pytest.fail(f"abcjax {shlex.join(arguments)}: the command line refuses it (exit code {exit_.code})")
    assert parsed.command in cli.COMMANDS


def test_the_readme_quotes_the_set_up_command_and_every_command_of_the_cli():
    invocations = readme_invocations()
    quoted = {arguments[0] for arguments in invocations}

    assert quoted == set(cli.COMMANDS)
    assert ["train", "--config", "configs/demo.py", "--workdir", "runs/demo"] in invocations  # the main job


def test_output_lines_are_told_apart_from_commands():
    lines = [
        "$ ABCJAX_PROCESS_ID=1 abcjax sample --workdir runs/tiny --out t.abc &",
        "abcjax: error: ABCJAX_PROCESS_ID 2 must be in [0, 2)",
        "sampling 8 tunes from the checkpoint of step 4 in runs/tiny",
        "% abcjax sample: checkpoint step 1200 of runs/demo",
        "$ head -12 runs/demo/tunes.abc",
    ]

    invocations = [args for line in command_lines("", lines) for args in abcjax_invocations(line)]

    assert invocations == [["sample", "--workdir", "runs/tiny", "--out", "t.abc"]]


def test_a_shell_block_yields_each_abcjax_of_a_chain_and_of_continued_lines():
    lines = [
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/abcjax train --config c.py --workdir w",
        "abcjax sample --workdir w \\",
        "    --num_tunes 10 > log.txt  # a comment",
    ]

    invocations = [args for line in command_lines("bash", lines) for args in abcjax_invocations(line)]

    assert invocations == [
        ["train", "--config", "c.py", "--workdir", "w"],
        ["sample", "--workdir", "w", "--num_tunes", "10"],
    ]


@pytest.mark.parametrize(
    "arguments",
    [["train", "--config", "c.py", "--workdir", "w", "--no_such_flag"], ["no_such_command"], ["evaluate"]],
    ids=shlex.join,
)
def test_a_flag_or_command_the_cli_lacks_is_refused(arguments):
    with pytest.raises(SystemExit) as exit_:
        cli.parse_command_line(arguments)

    assert exit_.value.code == 2


def _markdown_files():
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    return {_anchor(heading) for heading in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda path: path.name)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        assert linked.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(linked), f"{page.name} links to {target}: no such heading"
