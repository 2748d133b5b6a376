"""Each service's image carries only its own dependencies: what a service imports is provided by the
common dependencies plus its own extra (with their requirements), and the gateway's set holds no model
runtime or operator framework. The Dockerfile installs exactly that extra in each service's image."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SERVICES = {
    "gateway": ["services/gateway/iir_gateway"],
    "auth": ["services/auth/iir_auth"],
    "registry": ["services/registry/iir_registry"],
    "classifier": ["services/classifier/iir_classifier"],
    "operator": ["operator/iir_operator"],
    "simbackend": ["services/simbackend/iir_simbackend"],
}
OWN = {
    "iir",
    "iir_common",
    "iir_gateway",
    "iir_auth",
    "iir_registry",
    "iir_classifier",
    "iir_operator",
    "iir_simbackend",
}
# Build-time code (the classifier's model export) runs in the build stage, not the image.
SKIP = ("/build/", "/test_")


def _closure(requirements: list[str]) -> set[str]:
    """Distribution names of `requirements` and everything they require (markers evaluated here)."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = req.name.lower().replace("_", "-")
        if name == "iir":
            todo += [(Requirement(r), "") for e in req.extras for r in PYPROJECT["optional-dependencies"][e]]
            continue
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in requires:
            parsed = Requirement(r)
            if parsed.marker is None:
                todo.append((parsed, ""))
            else:
                todo += [(parsed, e) for e in ("", *req.extras)]
    return {k.split("[")[0] for k in seen}


# Shared packages only some services import: the others' images need not carry their dependencies.
LIBS_FOR = {"kv_blocks": ("gateway", "simbackend"), "kv_events": ("registry", "simbackend")}


def _imports(folder: Path, service: str = "") -> set[str]:
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        if any(s in str(path) for s in SKIP):
            continue
        if any(f"/{lib}/" in str(path) and service not in users for lib, users in LIBS_FOR.items()):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in OWN and m != "__future__"}


def _providers() -> dict[str, set[str]]:
    return {
        module: {d.lower().replace("_", "-") for d in dists} for module, dists in md.packages_distributions().items()
    }


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_imports_only_what_its_image_installs(service: str) -> None:
    installed = _closure(PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"][service])
    providers = _providers()
    modules = _imports(ROOT / SERVICES[service][0]) | _imports(ROOT / "libs" / "iir_common", service) - {
        "kubernetes_asyncio"
    }
    if service in ("registry", "operator"):
        modules |= {"kubernetes_asyncio"}  # iir_common.kube, which only they import
    missing = {m for m in modules if not providers.get(m, set()) & installed}
    assert not missing, f"{service} imports {sorted(missing)}, which its extra does not install"


def test_the_gateway_image_has_no_model_runtime_or_operator_framework() -> None:
    """(A tokenizer it has: precise prefix routing tokenizes prompts as the engine does.)"""
    installed = _closure(PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["gateway"])
    assert not installed & {"onnxruntime", "kopf", "torch", "transformers", "asyncpg", "kubernetes-asyncio"}


def test_each_image_installs_its_own_extra() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for service in SERVICES:
        assert re.search(rf'FROM deps AS deps-{service}\nRUN .*-c constraints.txt "\.\[{service}\]"', dockerfile)
        assert f"FROM runtime AS {service}\nCOPY --from=deps-{service} /venv /venv" in dockerfile
