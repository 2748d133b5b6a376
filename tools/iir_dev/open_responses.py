"""Runs the Open Responses compliance suite (the `openresponses` project's `test:compliance`) against a
throwaway IIR stack: `python -m iir_dev.open_responses [--suite DIR]` (`make test-openresponses
[OPENRESPONSES=DIR]`), by default the copy in `../shared/openresponses`. The suite stays outside this
repository: it is copied into `.cache/openresponses` (git-ignored) before `bun install`, so the folder it
came from stays as it was. `bun` is installed from the npm registry into `.cache/bun` the first time, and
put on the suite's `PATH` (its `package.json` scripts call `bun` by name).

The suite runs twice: against a `local/` model (the simulated vLLM) and against `anthropic/…`, a provider
whose Messages API (the tests' local fake of it) the gateway translates both ways."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from iir_dev import datastores
from iir_dev.stack import REPO, http_ok, throwaway_stack

BUN_HOME = REPO / ".cache" / "bun"
BUN_VERSION = "1.4.5"  # the version the suite last passed with
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
        subprocess.run(["npm", "install", "--silent", "--prefix", str(BUN_HOME), f"bun@{BUN_VERSION}"], check=True)
    return binary


@contextlib.contextmanager
def anthropic_fake(key: str) -> Iterator[str]:
    """The tests' fake of Anthropic's Messages API, as a process; its URL."""
    port = datastores.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.anthropic_api", "--port", str(port), "--key", key],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not http_ok(f"{url}/_calls"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Anthropic API fake did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", type=Path, default=SHARED_SUITE, help="the suite (default: ../shared/openresponses)")
    parser.add_argument("--model", default="local/llama-3-8b-instruct", help="the local model the suite calls")
    parser.add_argument(
        "--translated-model", default="anthropic/claude-sonnet-4-5", help="the translated provider's model"
    )
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
    anthropic_key = "sk-ant-" + secrets.token_hex(16)
    with contextlib.ExitStack() as running:
        fake = running.enter_context(anthropic_fake(anthropic_key))
        providers = Path(running.enter_context(tempfile.TemporaryDirectory())) / "providers.yaml"
        providers.write_text(f"providers:\n  anthropic:\n    base_url: {fake}\n")
        env_vars = {"IIR_PROVIDERS_FILE": str(providers), "ANTHROPIC_API_KEY": anthropic_key}
        stack = running.enter_context(throwaway_stack("iir-openresponses-", "iir_openresponses", env=env_vars))
        key = stack.create_key("open-responses")
        failed = 0
        for model in (args.model, args.translated_model):
            print(f"== Open Responses suite against {model}", flush=True)
            cmd = [str(runner), "run", "test:compliance", "--", "--base-url", f"{stack.gateway_url}/v1"]
            cmd += ["--api-key", key, "--model", model]
            failed |= subprocess.run(cmd, cwd=suite, env=env).returncode
        return failed


if __name__ == "__main__":
    sys.exit(main())
