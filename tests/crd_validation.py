"""Validates IIR's custom resources as the API server would: the CRD's OpenAPI schema, then its CEL rules."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy.adapter import json_to_cel

from tests.json_values import json_object

CRDS = Path(__file__).resolve().parents[1] / "deploy" / "crds"
CRD_PATH = CRDS / "inferencemodels.iir.dev.yaml"
KINDS = {"InferenceModel": CRD_PATH, "InferenceAdapter": CRDS / "inferenceadapters.iir.dev.yaml"}


@cache
def crd(kind: str = "InferenceModel") -> dict[str, Any]:
    return json_object(yaml.safe_load(KINDS[kind].read_text()))


def schema(kind: str = "InferenceModel") -> dict[str, Any]:
    return json_object(crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _cel_errors(node_schema: dict[str, Any], value: Any, path: str, env: celpy.Environment) -> list[str]:
    errors = []
    for rule in node_schema.get("x-kubernetes-validations") or []:
        program = env.program(env.compile(rule["rule"]))
        if not program.evaluate({"self": json_to_cel(value)}):
            errors.append(f"{path or '<root>'}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for key, child in (node_schema.get("properties") or {}).items():
            if key in value:
                errors += _cel_errors(child, value[key], f"{path}.{key}" if path else key, env)
    return errors


def validate_resource(obj: dict[str, Any]) -> list[str]:
    """Every schema error, then (if the schema passes) every CEL rule that fails, as messages; the CRD is
    the one of the object's kind."""
    kind_schema = schema(obj.get("kind", "InferenceModel"))
    validator = jsonschema.Draft7Validator(kind_schema)
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]
    return errors or _cel_errors(kind_schema, obj, "", celpy.Environment())
