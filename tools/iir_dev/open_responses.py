"""Runs the Open Responses compliance suite (the `openresponses` project's `test:compliance`) against a
throwaway IIR stack: `python -m iir_dev.open_responses --suite <checkout of openresponses/openresponses>`
(`make test-openresponses OPENRESPONSES=<dir>`). The suite stays outside this repository; `bun` is
installed from the npm registry into `.cache/bun` the first time."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from iir_dev.stack import REPO, throwaway_stack

BUN_HOME = REPO / ".cache" / "bun"


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
    parser.add_argument("--suite", required=True, type=Path, help="a checkout of openresponses/openresponses")
    parser.add_argument("--model", default="local/llama-3-8b-instruct", help="the model the suite calls")
    args = parser.parse_args()
    suite = args.suite.resolve()
    if not (suite / "package.json").exists():
        sys.exit(f"{suite}: not a checkout of openresponses/openresponses (no package.json)")
    runner = bun()
    if not (suite / "node_modules").exists():
        subprocess.run([str(runner), "install"], cwd=suite, check=True)
    with throwaway_stack("iir-openresponses-", "iir_openresponses") as stack:
        key = stack.create_key("open-responses")
        cmd = [str(runner), "run", "test:compliance", "--", "--base-url", f"{stack.gateway_url}/v1"]
        cmd += ["--api-key", key, "--model", args.model]
        return subprocess.run(cmd, cwd=suite).returncode


if __name__ == "__main__":
    sys.exit(main())
