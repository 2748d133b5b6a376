"""`iir keys|teams|users|spend|audit` against a gateway's admin API, and `iir generate-api-key`.

The gateway is `IIR_URL` (default http://127.0.0.1:8080); an admin key comes from `IIR_API_KEY` (the
names `make dev` prints as `export` lines; `IIR_ADMIN_KEY` is still read), not needed from
`IIR_TRUSTED_NETWORKS`, which `make dev` sets to this machine; always needed in a cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from iir_common.api_keys import KEY_PREFIX, generate_key


class CliError(Exception):
    pass


def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url = os.environ.get("IIR_URL", "http://127.0.0.1:8080").rstrip("/") + path
    headers = {"Content-Type": "application/json"}
    key = os.environ.get("IIR_API_KEY") or os.environ.get("IIR_ADMIN_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            raw = resp.read()
            return json.loads(raw) if "json" in resp.headers.get("content-type", "") else raw.decode()
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
        "team_id": args.team,
        "user_id": args.user,
        "max_parallel_requests": args.max_parallel,
        **_money_fields(args),
    }


def _money_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_budget": args.max_budget,
        "budget_duration": args.budget_duration,
        "metadata": json.loads(args.metadata) if args.metadata else None,
    }


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    """What an option set (what is not given stays, or takes the server's default)."""
    return {k: v for k, v in fields.items() if v is not None}


def _owner_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-budget", type=float, help="money (USD) per budget duration (0: unlimited)")
    parser.add_argument("--budget-duration", help="30m, 12h, 7d, 1mo... from creation, day, month ('' for all time)")
    parser.add_argument("--metadata", help="a JSON object")


def _limit_options(parser: argparse.ArgumentParser) -> None:
    _owner_options(parser)
    parser.add_argument("--rpm", type=int, help="requests per minute (0: unlimited)")
    parser.add_argument("--tpm", type=int, help="tokens per minute (0: unlimited)")


def _print(data: Any) -> None:
    print(data if isinstance(data, str) else json.dumps(data, indent=2))


def _org_fields(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    fields = {**_money_fields(args), "rpm_limit": args.rpm, "tpm_limit": args.tpm}
    if kind == "teams":
        fields.update(name=args.name, allowed_models=args.models)
    else:
        fields.update(email=args.email, team_ids=args.teams)
        if args.action == "create":
            fields["id"] = args.id
    return _given(fields)


def org_command(args: argparse.Namespace) -> None:
    """`iir teams ...` and `iir users ...`."""
    base = f"/api/v1/{args.command}"
    if args.action == "create":
        _print(call("POST", base, _org_fields(args, args.command)))
    elif args.action == "list":
        _print(call("GET", base)["data"])
    elif args.action == "get":
        _print(call("GET", f"{base}/{args.id}"))
    elif args.action == "update":
        _print(call("PATCH", f"{base}/{args.id}", _org_fields(args, args.command)))
    elif args.action == "delete":
        _print(call("DELETE", f"{base}/{args.id}"))


def spend_command(args: argparse.Namespace) -> None:
    query = urllib.parse.urlencode(
        _given({"group_by": args.group_by, "since": args.since, "until": args.until, "format": args.format})
    )
    _print(call("GET", f"/api/v1/spend?{query}"))


def audit_command(args: argparse.Namespace) -> None:
    query = urllib.parse.urlencode(_given({"limit": args.limit, "target": args.target}))
    _print(call("GET", f"/api/v1/audit?{query}")["data"])


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
        _print(call("PATCH", f"/api/v1/apikeys/{args.id}", _given(_key_fields(args))))
    elif args.action == "regenerate":
        _print(call("POST", f"/api/v1/apikeys/{args.id}/regenerate", {"grace_period_s": args.grace}))
    elif args.action in ("block", "unblock"):
        _print(call("POST", f"/api/v1/apikeys/{args.id}/{args.action}"))


def generate_command(args: argparse.Namespace) -> None:
    print(generate_key(args.length, args.prefix))


def _generate_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--length", type=int, default=40, help="random characters after the prefix (≥ 16)")
    parser.add_argument("--prefix", default=KEY_PREFIX, help=f"text before them (default {KEY_PREFIX!r})")
    parser.set_defaults(func=generate_command)


def _key_owner_options(parser: argparse.ArgumentParser) -> None:
    _owner_options(parser)
    parser.add_argument("--team", help="the team's id")
    parser.add_argument("--user", help="the user's id")
    parser.add_argument("--max-parallel", type=int, help="requests running at once (0: unlimited)")


def _org_parser(parser: argparse.ArgumentParser, kind: str) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help=f"create one of the {kind}")
    update = actions.add_parser("update", help="change settings (what is not given stays)")
    update.add_argument("id")
    for p in (create, update):
        _limit_options(p)
        if kind == "teams":
            p.add_argument("--models", nargs="*", help="allowed model globs for the team's keys")
        else:
            p.add_argument("--email")
            p.add_argument("--teams", nargs="*", help="team ids (replaces the memberships)")
    if kind == "teams":
        create.add_argument("name")
        update.add_argument("--name")
    else:
        create.add_argument("--id", help="your id for the user (default: the email)")
    actions.add_parser("list", help=f"list {kind}")
    for name in ("get", "delete"):
        actions.add_parser(name, help=f"{name} by id").add_argument("id")
    parser.set_defaults(func=org_command)


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
    _key_owner_options(create)
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
    _key_owner_options(update)
    regenerate = actions.add_parser("regenerate", help="a new secret for the same key (printed once)")
    regenerate.add_argument("id")
    regenerate.add_argument("--grace", type=int, default=0, help="seconds the old secret keeps working")
    actions.add_parser("list", help="list keys").add_argument("--all", action="store_true", help="with revoked")
    for name in ("get", "revoke", "rotate", "usage", "block", "unblock"):
        actions.add_parser(name, help=f"{name} a key by id").add_argument("id")
    keys.set_defaults(func=keys_command)
    for kind in ("teams", "users"):
        _org_parser(sub.add_parser(kind, help=f"manage {kind} (keys belong to them, bounded by their limits)"), kind)
    spend = sub.add_parser("spend", help="money spent, grouped")
    spend.add_argument("--group-by", choices=("team", "user", "key", "model", "day"), default="team")
    spend.add_argument("--since", help="first UTC day, YYYY-MM-DD")
    spend.add_argument("--until", help="last UTC day, YYYY-MM-DD")
    spend.add_argument("--format", choices=("json", "csv"))
    spend.set_defaults(func=spend_command)
    audit = sub.add_parser("audit", help="admin actions, newest first")
    audit.add_argument("--limit", type=int)
    audit.add_argument("--target", help="e.g. key:<id>, team:<id>, user:<id>")
    audit.set_defaults(func=audit_command)
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
