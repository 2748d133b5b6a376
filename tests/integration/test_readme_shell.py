"""The README's shell blocks (```sh and ```bash), as a reader pastes them into a terminal.

Every block is valid bash (`bash -n`), and no line continuation is broken by a comment: a `\\` followed by
a comment, or a comment ending in `\\`, ends the command there, and the next line runs as a command of its
own (`--set …: command not found`).

Then the blocks that need only the running stack run for real, in the README's order and in one shell
session, as a reader pastes them one after another into one terminal (what a block sets, `H`, `TEAM`,
`ID`…, the later blocks see). They run against a stack set up as `make dev` sets it up (its settings, the
dev models file, its admin key), with `IIR_URL` and `IIR_API_KEY` exported as `make dev` prints them.

Which blocks run, the rule: a block runs when each of its commands is `curl` against `$IIR_URL` (also in
a pipeline or a `$(…)` to `jq` or `tee`), `echo`, a variable assignment or `export`. A block that calls any
of the programs in `NOT_RUN` is only checked, for the reason given there; one that calls a program named
in neither fails the test, so that the rule always says what becomes of a block.

Each curl must answer 2xx or a status its comment names; a comment that starts with a status (`# 409 …`,
`# → 201 …`) says the one it answers. A comment line under a `curl -i` that shows a header (`#
x-iir-model: local/…`) must match the answer's header (its first word).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from iir_cli.__main__ import build_parser
from iir_dev import datastores, dev_key
from iir_dev.stack import REPO, Stack, dev_settings
from tests.waiting import unavailable

README = REPO / "README.md"
RUN = {"curl", "jq", "tee", "echo", "export"}
NOT_RUN = {
    "kubectl": "needs a Kubernetes cluster",
    "helm": "needs a Kubernetes cluster",
    "kind": "needs a Kubernetes cluster",
    "skaffold": "needs a Kubernetes cluster and a container engine",
    "docker": "needs a container engine",
    "make": "builds for minutes: `make dev` starts the stack this test stands in for, `make test` runs this test",
    ".venv/bin/iir": "the CLI repeats the curl examples before it, with the same names: run after them, its "
    "creates would conflict (test_every_cli_line_parses checks its arguments)",
    ".venv/bin/generate_api_key": "shown beside the CLI (test_every_cli_line_parses)",
}
STATUS = "IIR-README-STATUS"


@dataclass
class Command:
    line: int  # the README line it starts on
    code: str  # as bash reads it: continuations joined, comments left out
    words: str  # the same with quoted text emptied, where the programs it calls are looked for
    comments: list[str] = field(default_factory=list)  # on its lines, then the comment lines after it

    def programs(self) -> list[str]:
        """The programs it calls: the first word of each part (`;`, `|`, `&&`, `$(`…), past assignments."""
        found = []
        for part in re.split(r"\|\||&&|[;|&()`]|\$\(", self.words):
            for word in part.split():
                if not re.fullmatch(r"[A-Za-z_]\w*=\S*", word):
                    found.append(word)
                    break
        return found

    def assigned(self) -> set[str]:
        names = re.findall(r"(?:^|[\s;(]|export\s+)([A-Za-z_]\w*)=", self.words)
        return set(names)

    def curls(self) -> int:
        return self.programs().count("curl")

    def allowed(self) -> set[int] | None:
        """The statuses its curls may answer; None: any 2xx."""
        said = " ".join(self.comments)
        exact = re.match(r"\s*(?:→\s*)?([1-5]\d\d)\b", said)
        if exact:
            return {int(exact.group(1))}
        named = {int(s) for s in re.findall(r"\b([1-5]\d\d)\b", said)}
        return set(range(200, 300)) | named if named else None

    def headers(self) -> list[tuple[str, str]]:
        """(name, first word) of each header its comment lines show, for a `curl -i`."""
        if not re.search(r"(?:^|\s)-i(?:\s|$)", self.words):
            return []
        shown = [re.match(r"([A-Za-z][\w-]*):\s+(\S+)", c) for c in self.comments]
        return [(m.group(1), m.group(2)) for m in shown if m]


@dataclass
class Block:
    line: int  # the README line of its opening fence
    text: str
    commands: list[Command]
    problems: list[str]

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"

    def programs(self) -> set[str]:
        return {p for c in self.commands for p in c.programs()}

    def not_run(self) -> list[str]:
        """Why it is only checked (empty: it runs)."""
        return [f"{p}: {NOT_RUN[p]}" for p in sorted(self.programs() & NOT_RUN.keys())]


def parse(text: str, first_line: int) -> tuple[list[Command], list[str]]:
    """The commands of a block as bash splits them (newlines and `;` outside quotes and `$(…)`), with their
    comments; and the line continuations a comment breaks."""
    commands: list[Command] = []
    problems: list[str] = []
    code: list[str] = []
    words: list[str] = []
    comments: list[str] = []
    start: int | None = None
    quote, depth, line, i = "", 0, first_line, 0

    def end() -> None:
        nonlocal code, words, comments, start
        if start is not None:
            commands.append(Command(start, "".join(code).strip(), "".join(words).strip(), comments))
        elif comments and commands:  # a comment line: about the command above it
            commands[-1].comments += comments
        code, words, comments, start = [], [], [], None

    while i < len(text):
        c, after = text[i], text[i + 1 : i + 2]
        if start is None and not c.isspace() and (quote or c != "#"):
            start = line
        if quote:
            code.append(c)
            if c == "\\" and quote == '"' and after:
                code.append(after)
                line += after == "\n"
                i += 1
            elif c == quote:
                quote = ""
                words.append(c)
            line += c == "\n"
        elif c == "\\" and after == "\n":
            code.append(" ")
            words.append(" ")
            line += 1
            i += 1
        elif c == "\\" and after:
            rest = text[i + 1 :].split("\n", 1)[0].strip()
            if after in " \t" and (not rest or rest.startswith("#")):
                what = "a comment" if rest else "only spaces"
                problems.append(f"line {line}: `\\` is followed by {what}, so the command ends there")
            code += [c, after]
            words += [c, after]
            i += 1
        elif c in "'\"":
            quote = c
            code.append(c)
            words.append(c)
        elif c == "#" and (i == 0 or text[i - 1] in " \t\n;|&()"):
            comment = text[i + 1 :].split("\n", 1)[0]
            if comment.rstrip().endswith("\\"):
                problems.append(f"line {line}: a comment ends in `\\`, which does not continue the command")
            comments.append(comment.strip())
            i += len(comment)
        elif c == "\n" and depth == 0:
            end()
            line += 1
        elif c == ";" and depth == 0:
            end()
        else:
            if c == "(":
                depth += 1
            elif c == ")":
                depth = max(0, depth - 1)
            line += c == "\n"
            code.append(c)
            words.append(c)
        i += 1
    end()
    for command in commands:
        if command.words.startswith("-"):
            problems.append(
                f"line {command.line}: `{command.code.split()[0]}` runs as a command of its own: "
                "the line above does not continue"
            )
    return commands, problems


def shell_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for match in re.finditer(r"^```(?:sh|bash)\n(.*?)^```$", text, flags=re.M | re.S):
        line = text.count("\n", 0, match.start()) + 1
        commands, problems = parse(match.group(1), line + 1)
        blocks.append(Block(line, match.group(1), commands, problems))
    return blocks


BLOCKS = shell_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_a_shell_block_is_valid_bash_with_unbroken_lines(block: Block) -> None:
    checked = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True)
    assert checked.returncode == 0, f"{block.id}: {checked.stderr}"
    assert not block.problems, f"{block.id}: {block.problems}"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_a_shell_block_runs_or_the_rule_says_why_not(block: Block) -> None:
    unknown = block.programs() - RUN - NOT_RUN.keys()
    assert not unknown, f"{block.id} calls {sorted(unknown)}: run them here or say in NOT_RUN why not"
    if not block.not_run():
        for command in block.commands:
            if command.curls():
                assert "$IIR_URL" in command.code, f"README.md:{command.line}: curl not against $IIR_URL"


def test_every_cli_line_parses() -> None:
    parser = build_parser()
    lines = [c for b in BLOCKS for c in b.commands if c.programs()[:1] == [".venv/bin/iir"]]
    assert lines
    for command in lines:
        try:
            parser.parse_args(shlex.split(command.code)[1:])
        except SystemExit:
            pytest.fail(f"README.md:{command.line}: the CLI refuses `{command.code}`")


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str) -> Iterator[Stack]:
    """A stack as `make dev` sets it up, with a database of its own: the README's names ("search",
    ada@example.com) are new there."""
    name = f"iir_readme_{uuid.uuid4().hex[:10]}"
    admin = datastores.with_database(database_url, "postgres")
    env = dev_settings() | {"IIR_REDIS_PREFIX": f"iir-readme-{uuid.uuid4().hex[:8]}:"}
    stack = Stack(
        workdir=tmp_path_factory.mktemp("readme-stack"),
        database_url=datastores.ensure_database(admin, name),
        redis_url=redis_url,
        env=env,
    )
    stack.start()
    yield stack
    stack.stop()
    datastores.drop_database(admin, name)


def test_the_quick_starts_model_list_is_what_make_dev_lists(dev_stack: Stack) -> None:
    """The Quick start's `client.models.list()` prints what `make dev` serves (the models of
    deploy/dev/models.yaml and the `auto` policies of its routing file; external providers' models come
    only with their keys, which the README's list leaves out)."""
    listing = re.search(r"^print\(\[m\.id for m in client\.models\.list\(\)\]\)\n# (\[.*\])$", README.read_text(), re.M)
    assert listing, "the Quick start shows no model list under client.models.list()"
    key = dev_key.admin_key(dev_stack, dev_stack.workdir)
    answer = httpx.get(f"{dev_stack.gateway_url}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=10)
    served = [m["id"] for m in answer.json()["data"] if m["id"].startswith(("local/", "auto"))]
    assert ast.literal_eval(listing.group(1)) == served


def test_the_blocks_that_need_only_the_stack_run_as_written(dev_stack: Stack, tmp_path: Path) -> None:
    for tool in ("curl", "jq"):
        if not shutil.which(tool):
            unavailable(f"{tool} is not installed: the README's curl examples not run")
    runs = [b for b in BLOCKS if not b.not_run()]
    assert any(b.commands and all(c.curls() for c in b.commands) for b in runs), "no curl block runs"
    variables = sorted({name for b in runs for c in b.commands for name in c.assigned()})
    state = tmp_path / "state.sh"
    state.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IIR_")}
    env |= {"IIR_URL": dev_stack.gateway_url, "IIR_API_KEY": dev_key.admin_key(dev_stack, dev_stack.workdir)}
    failures = []
    for block in runs:
        script = "\n".join(
            [
                "set -eo pipefail",
                f"source {shlex.quote(str(state))}",
                # Each answer's status on stderr, on a line of its own beside what the block does with its
                # body (`tee /dev/stderr` writes it there too, with no newline at its end).
                f"curl() {{ command curl -w '%{{stderr}}\\n{STATUS} %{{http_code}}\\n' \"$@\"; }}",
                block.text,
                f"declare -p {' '.join(variables)} > {shlex.quote(str(state))} 2>/dev/null || true",
            ]
        )
        done = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        statuses = [int(s) for s in re.findall(rf"{STATUS} (\d+)$", done.stderr, flags=re.M)]
        expected = [(c, c.allowed()) for c in block.commands for _ in range(c.curls())]
        wrong = [
            f"README.md:{c.line}: {status} for `{c.code[:100]}`"
            for (c, allowed), status in zip(expected, statuses, strict=False)
            if (status not in allowed if allowed else not 200 <= status < 300)
        ]
        wrong += [
            f"README.md:{c.line}: no `{name}: {value}` header in the answer"
            for c in block.commands
            for name, value in c.headers()
            if not re.search(rf"^{re.escape(name)}:\s*{re.escape(value)}", done.stdout, flags=re.M | re.I)
        ]
        if done.returncode or len(statuses) != len(expected) or wrong:
            failures.append(
                f"{block.id} (exit {done.returncode}, {len(statuses)} of {len(expected)} curls answered): "
                f"{wrong}\n{done.stderr[-1500:]}"
            )
    assert not failures, "\n\n".join(failures)
