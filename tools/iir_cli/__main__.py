"""`iir keys create|list|get|update|revoke|rotate|usage` against a gateway's admin API, and `iir generate-api-key`.

The gateway is `IIR_URL` (default http://127.0.0.1:8080); an admin key comes from `IIR_ADMIN_KEY`
(not needed from `IIR_TRUSTED_NETWORKS`, which `make dev` sets to this machine; always needed in a cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from iir_common.api_keys import KEY_PREFIX, generate_key


class CliError(Exception):
    pass


def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url = os.environ.get("IIR_URL", "http://127.0.0.1:8080").rstrip("/") + path
    headers = {"Content-Type": "application/json"}
    if os.environ.get("IIR_ADMIN_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['IIR_ADMIN_KEY']}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise CliError(f"{exc.code}: {message}") from None
    except urllib.error.URLError as exc:
        raise CliError(f"cannot reach the gateway at {url}: {exc.reason}") from None


def _table(keys: list[dict[str, Any]]) -> str:
    cols = ("id", "name", "prefix", "admin", "priority", "rpm_limit", "tpm_limit", "last_used_at", "revoked_at")
    rows = [[str(k.get(c) if k.get(c) is not None else "-") for c in cols] for k in keys]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _key_fields(args: argparse.Namespace) -> dict[str, Any]:
    """A key's settings from the options `keys create` and `keys update` share."""
    return {
        "name": args.name,
        "description": args.description,
        "owner": args.owner,
        "priority": args.priority,
        "allowed_models": args.models,
        "rpm_limit": args.rpm,
        "tpm_limit": args.tpm,
        "budget_tokens": args.budget,
        "budget_period": args.budget_period,
        "expires_in_days": args.expires_in_days,
        "scrub_mode": args.scrub_mode,
        "cache_mode": args.cache_mode,
    }


def keys_command(args: argparse.Namespace) -> None:
    if args.action == "create":
        fields = {**_key_fields(args), "admin": args.admin}
        body = {k: v for k, v in fields.items() if v not in (None, [], False)}
        created = call("POST", "/api/v1/apikeys", body)
        print(json.dumps(created, indent=2))
        print(f"\nThe key is shown once; store it now:\n{created['key']}", file=sys.stderr)
    elif args.action == "list":
        print(_table(call("GET", f"/api/v1/apikeys?include_revoked={str(args.all).lower()}")["data"]))
    elif args.action in ("get", "usage"):
        suffix = "/usage" if args.action == "usage" else ""
        print(json.dumps(call("GET", f"/api/v1/apikeys/{args.id}{suffix}"), indent=2))
    elif args.action == "revoke":
        revoked = call("DELETE", f"/api/v1/apikeys/{args.id}")
        print(f"revoked {revoked['id']} ({revoked['prefix']}…) at {revoked['revoked_at']}")
    elif args.action == "rotate":
        rotated = call("POST", f"/api/v1/apikeys/{args.id}/rotate")
        print(json.dumps(rotated, indent=2))
    elif args.action == "update":
        body = {k: v for k, v in _key_fields(args).items() if v is not None}  # what is not given stays
        print(json.dumps(call("PATCH", f"/api/v1/apikeys/{args.id}", body), indent=2))


def generate_command(args: argparse.Namespace) -> None:
    print(generate_key(args.length, args.prefix))


def _generate_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--length", type=int, default=40, help="random characters after the prefix (≥ 16)")
    parser.add_argument("--prefix", default=KEY_PREFIX, help=f"text before them (default {KEY_PREFIX!r})")
    parser.set_defaults(func=generate_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iir", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="manage API keys through the gateway")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key (its secret is printed once)")
    create.add_argument("--name")
    create.add_argument("--description", default="")
    create.add_argument("--owner", default="")
    create.add_argument("--priority", type=int, default=0)
    create.add_argument("--admin", action="store_true")
    create.add_argument("--models", nargs="*", default=[], help="allowed model globs, e.g. 'local/*'")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--budget", type=int, help="tokens per budget period")
    create.add_argument("--budget-period", choices=("day", "month"))
    create.add_argument("--expires-in-days", type=float)
    create.add_argument("--scrub-mode", choices=("redact", "block", "off"), help="secret scrubbing for this key")
    create.add_argument("--cache-mode", choices=("on", "off"), help="response cache for this key")
    update = actions.add_parser("update", help="change a key's settings (its secret stays)")
    update.add_argument("id")
    update.add_argument("--name")
    update.add_argument("--description")
    update.add_argument("--owner")
    update.add_argument("--priority", type=int)
    update.add_argument("--models", nargs="*", help="allowed model globs (none given: every model)")
    update.add_argument("--rpm", type=int, help="requests per minute (0: unlimited)")
    update.add_argument("--tpm", type=int, help="tokens per minute (0: unlimited)")
    update.add_argument("--budget", type=int, help="tokens per budget period (0: none)")
    update.add_argument("--budget-period", choices=("day", "month"))
    update.add_argument("--expires-in-days", type=float)
    update.add_argument("--scrub-mode", choices=("", "redact", "block", "off"))
    update.add_argument("--cache-mode", choices=("", "on", "off"))
    actions.add_parser("list", help="list keys").add_argument("--all", action="store_true", help="with revoked")
    for name in ("get", "revoke", "rotate", "usage"):
        actions.add_parser(name, help=f"{name} a key by id").add_argument("id")
    keys.set_defaults(func=keys_command)
    _generate_parser(sub.add_parser("generate-api-key", help="print a new random key (offline)"))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CliError, ValueError) as exc:
        sys.exit(f"iir: {exc}")


def generate_api_key_main() -> None:
    """`generate_api_key [--length N] [--prefix P]`."""
    parser = argparse.ArgumentParser(prog="generate_api_key", description="Print a new random IIR API key.")
    _generate_parser(parser)
    args = parser.parse_args()
    try:
        args.func(args)
    except ValueError as exc:
        sys.exit(f"generate_api_key: {exc}")


if __name__ == "__main__":
    main()
