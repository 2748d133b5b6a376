"""Runs the Open Responses compliance suite (the `openresponses` project's `test:compliance`) against a
throwaway IIR stack: `python -m iir_dev.open_responses [--suite DIR]` (`make test-openresponses
[OPENRESPONSES=DIR]`), by default the copy in `../shared/openresponses`. The suite stays outside this
repository: it is copied into `.cache/openresponses` (git-ignored) before `bun install`, so the folder it
came from stays as it was. `bun` is installed from the npm registry into `.cache/bun` the first time, and
put on the suite's `PATH` (its `package.json` scripts call `bun` by name)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from iir_dev.stack import REPO, throwaway_stack

BUN_HOME = REPO / ".cache" / "bun"
SHARED_SUITE = REPO.parent / "shared" / "openresponses"
SUITE_COPY = REPO / ".cache" / "openresponses"


def bun() -> Path:
    """A `bun` binary: the one on PATH, else the npm package's, installed once."""
    found = shutil.which("bun")
    if found:
        return Path(found)
    binary = BUN_HOME / "node_modules" / ".bin" / "bun"
    if not binary.exists():
        BUN_HOME.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--prefix", str(BUN_HOME), "bun"], check=True)
    return binary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", type=Path, default=SHARED_SUITE, help="the suite (default: ../shared/openresponses)")
    parser.add_argument("--model", default="local/llama-3-8b-instruct", help="the model the suite calls")
    args = parser.parse_args()
    source = args.suite.resolve()
    if not (source / "package.json").exists():
        sys.exit(f"{source}: not the Open Responses suite (no package.json)")
    suite = SUITE_COPY
    shutil.copytree(source, suite, dirs_exist_ok=True, ignore=shutil.ignore_patterns("node_modules"))
    runner = bun()
    env = {**os.environ, "PATH": f"{runner.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if not (suite / "node_modules").exists():
        subprocess.run([str(runner), "install"], cwd=suite, check=True, env=env)
    with throwaway_stack("iir-openresponses-", "iir_openresponses") as stack:
        key = stack.create_key("open-responses")
        cmd = [str(runner), "run", "test:compliance", "--", "--base-url", f"{stack.gateway_url}/v1"]
        cmd += ["--api-key", key, "--model", args.model]
        return subprocess.run(cmd, cwd=suite, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
