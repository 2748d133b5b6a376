"""Generates docs/crd-reference.md from the schemas of IIR's CRDs (`make docs`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CRDS = [REPO / "deploy" / "crds" / f for f in ("inferencemodels.iir.dev.yaml", "inferenceadapters.iir.dev.yaml")]
OUT = REPO / "docs" / "crd-reference.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "length ≥"), ("maxItems", "items ≤")):
        if key in node:
            parts.append(f"{label} {node[key]}")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    return "; ".join(parts)


def _type(node: dict[str, Any]) -> str:
    if node.get("type") == "array":
        return f"[]{_type(node.get('items') or {})}"
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    return str(node.get("type", "any"))


def _rows(node: dict[str, Any], path: str, required: bool, out: list[str], rules: list[str]) -> None:
    for rule in node.get("x-kubernetes-validations") or []:
        rules.append(f"| `{path or '.'}` | `{_cell(rule['rule'])}` | {_cell(rule.get('message', ''))} |")
    if path:
        default = f"`{json.dumps(node['default'])}`" if "default" in node else ""
        desc = " ".join(str(node.get("description", "")).split())
        out.append(
            f"| `{path}` | {_type(node)} | {'yes' if required else ''} | {_cell(default)} "
            f"| {_cell(_constraints(node))} | {_cell(desc)} |"
        )
    props = node.get("properties") or (node.get("items") or {}).get("properties") or {}
    needed = set(node.get("required") or (node.get("items") or {}).get("required") or [])
    suffix = "[]" if node.get("type") == "array" else ""
    for name, child in props.items():
        _rows(child, f"{path}{suffix}.{name}" if path else name, name in needed, out, rules)


def render_crd(path: Path) -> list[str]:
    crd = yaml.safe_load(path.read_text())
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    names = crd["spec"]["names"]
    short = ", ".join(names.get("shortNames", []))
    lines = [
        f"# {names['kind']}",
        "",
        f"`{crd['spec']['group']}/{version['name']}`, kind `{names['kind']}`, {crd['spec']['scope'].lower()}, "
        f"short name `{short}`; from `{path.relative_to(REPO)}`. {schema.get('description', '')}",
        "",
        f"`kubectl get {short}` columns: "
        + ", ".join(c["name"] for c in version.get("additionalPrinterColumns", []))
        + ".",
    ]
    rules: list[str] = []
    for part in ("spec", "status"):
        rows: list[str] = []
        _rows(schema["properties"][part], part, part in schema.get("required", []), rows, rules)
        lines += [
            "",
            f"## {names['kind']} {part}",
            "",
            "| Field | Type | Required | Default | Constraints | Description |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    root_rules: list[str] = []
    _rows({"x-kubernetes-validations": schema.get("x-kubernetes-validations")}, "", False, [], root_rules)
    lines += [
        "",
        f"## {names['kind']} validation rules (CEL)",
        "",
        "The API server refuses a resource that breaks one of these, with the message shown.",
        "",
        "| At | Rule | Message |",
        "|---|---|---|",
        *root_rules,
        *rules,
        "",
    ]
    return lines


def render() -> str:
    lines = [
        "# Custom resource reference",
        "",
        "Generated from `deploy/crds/` by `make docs`; do not edit by hand.",
        "",
    ]
    for path in CRDS:
        lines += render_crd(path)
    return "\n".join(lines)


def main() -> None:
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            sys.exit(f"{OUT.relative_to(REPO)} is out of date: run `make docs`")
        return
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
