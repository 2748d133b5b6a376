"""`python -m iir_dev up` (what `make dev` runs): the whole stack on this machine, until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from iir_dev import datastores, dev_key
from iir_dev.stack import MANAGED_VARIABLES, REPO, Ports, Stack, StackError, dev_settings


def up(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    print("IIR dev stack: finding PostgreSQL and Redis…", flush=True)
    try:
        pg = datastores.postgres(workdir, database="iir")
        rd = datastores.redis(workdir)
    except datastores.DatastoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"  PostgreSQL: {pg.origin}   Redis: {rd.origin}", flush=True)
    # Your own IIR_ settings (IIR_PROVIDERS_FILE, IIR_ENDPOINT_PICKER…) reach the services; addresses are the stack's.
    settings = dev_settings()
    settings.update({k: v for k, v in os.environ.items() if k.startswith("IIR_") and k not in MANAGED_VARIABLES})
    stack = Stack(workdir=workdir, database_url=pg.url, redis_url=rd.url, ports=Ports.defaults(), env=settings)
    print("Starting simbackend, registry, auth, classifier, gateway…", flush=True)
    try:
        stack.start()
        key = dev_key.admin_key(stack, workdir)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        pg.stop()
        rd.stop()
        return 1
    url = stack.gateway_url
    print(
        f"""
IIR is up.
  URL:      {url}
  SDKs:     OpenAI(base_url="{url}/v1", api_key=...)   (the OpenAI API is under /v1)
  API key:  {key}   (an admin key, kept in {workdir / dev_key.FILE_NAME} and reused)
  Admin UI: {url}/ui/   (log in with that key: keys, teams, users, spend, models)
  Docs:     {url}/docs      Health: {url}/health      Metrics: {stack.metrics_url}
  Models:   edit {stack.models_file} (kept across runs, reloaded on save)
  External: export ANTHROPIC_API_KEY / OPENAI_API_KEY / … before `make dev` to call anthropic/…, openai/…
  Logs:     {workdir / "logs"}

For the CLI and the README's examples, in your shell:
  export IIR_URL={url} IIR_API_KEY={key}

Try it (or "model": "auto" to let the classifier choose):
  curl $IIR_URL/v1/chat/completions -H "Authorization: Bearer $IIR_API_KEY" \\
    -H 'Content-Type: application/json' \\
    -d '{{"model": "local/llama-3-8b-instruct", "messages": [{{"role": "user", "content": "Hello"}}]}}'

Press Ctrl-C to stop.""",
        flush=True,
    )
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stopping:
            for proc in stack.processes.values():
                if proc.popen.poll() is not None:
                    print(f"error: {proc.name} exited:\n{proc.log_tail()}", file=sys.stderr)
                    stopping = True
            time.sleep(0.5)
    finally:
        print("Stopping…", flush=True)
        stack.stop()
        pg.stop()
        rd.stop()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="iir-dev", description="IIR local development stack")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start every service locally and print the URL and an API key")
    p_up.add_argument("--workdir", default=str(REPO / ".dev"), help="state, logs and throwaway servers")
    p_up.set_defaults(func=up)
    args = parser.parse_args()
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
