"""A value of a JSON Schema, as vLLM's guided decoding would produce one: what the simulator answers for
`response_format` `json_schema`, vLLM's `guided_json` and `structured_outputs.json`, and a tool's
arguments. Deterministic: the same schema and seed give the same value."""

from __future__ import annotations

from typing import Any

_FORMATS = {
    "date": "2026-01-01",
    "date-time": "2026-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
_MAX_DEPTH = 8  # a recursive schema ($ref to itself) ends in the smallest value


def schema_value(schema: Any, word: str, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A value that `schema` accepts; strings are `word` (stretched or cut to the length bounds)."""
    if not isinstance(schema, dict):
        return word  # `true` or a malformed schema: anything will do
    root = schema if root is None else root
    if "$ref" in schema:
        return schema_value(_resolve(root, str(schema["$ref"])), word, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for choice in ("anyOf", "oneOf"):
        if schema.get(choice):
            options = schema[choice]
            # Past the depth bound, prefer a branch that ends (`null`, a plain value) to one that recurses.
            pick = next((o for o in options if o.get("type") == "null"), options[0]) if depth > _MAX_DEPTH else None
            return schema_value(pick or options[0], word, root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged |= _resolve(root, part["$ref"]) if "$ref" in part else part
        return schema_value(merged, word, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    return _typed(str(kind), schema, word, root, depth)


def _typed(kind: str, schema: dict[str, Any], word: str, root: dict[str, Any], depth: int) -> Any:
    if kind == "object":
        props: dict[str, Any] = schema.get("properties") or {}
        required = schema.get("required")
        names = list(props) if required is None or depth <= _MAX_DEPTH else list(required)
        return {name: schema_value(props[name], word, root, depth + 1) for name in names if name in props}
    if kind == "array":
        count = max(int(schema.get("minItems", 1 if depth <= _MAX_DEPTH else 0)), 0)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        return [schema_value(schema.get("items", {}), word, root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = max(1, int(low) + (1 if "exclusiveMinimum" in schema else 0))
        if "maximum" in schema:
            value = min(value, int(schema["maximum"]))
        return value if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = _FORMATS.get(str(schema.get("format")), word)
    least, most = int(schema.get("minLength", 0)), schema.get("maxLength")
    if len(text) < least:
        text = (text * (least // max(len(text), 1) + 1))[:least] if text else "x" * least
    return text[: int(most)] if most is not None else text


def _resolve(root: dict[str, Any], ref: str) -> Any:
    """A local `#/...` reference in `root` (`$defs`, `definitions`); an empty schema otherwise."""
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}
