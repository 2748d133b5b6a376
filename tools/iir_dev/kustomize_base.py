"""Renders the kustomize base (and the dev overlay's datastores) from the Helm chart, so both install
the same objects. `make kustomize` writes them; a test fails when they drift from the chart.
"""

from __future__ import annotations

import subprocess

from iir_dev.helm import helm_binary, helm_env
from iir_dev.stack import REPO

CHART = REPO / "deploy" / "helm" / "iir"
KUSTOMIZE = REPO / "deploy" / "kustomize"
HEADER = "# Generated from deploy/helm/iir by `make kustomize`; edit the chart, not this file.\n"
# Secrets come from the overlays (one Secret `iir-secrets`), so nothing random is baked in.
BASE_VALUES = [
    "masterKey.existingSecret=iir-secrets",
    "database.existingSecret=iir-secrets",
    "redis.existingSecret=iir-secrets",
    "bundled.postgresql.enabled=false",
    "bundled.redis.enabled=false",
]


def _template(*args: str) -> str:
    out = subprocess.run(
        [helm_binary(), "template", "iir", str(CHART), "--namespace", "iir-system", *args],
        capture_output=True,
        text=True,
        env=helm_env(),
        check=True,
    ).stdout
    return HEADER + out


def render() -> dict[str, str]:
    """Path (relative to deploy/kustomize) → content."""
    base = _template("--include-crds", *[a for v in BASE_VALUES for a in ("--set", v)])
    datastores = _template("--show-only", "templates/datastores.yaml", "--set", "masterKey.value=unused")
    return {"base/iir.yaml": base, "overlays/dev/datastores.yaml": datastores}


def main() -> None:
    for path, content in render().items():
        (KUSTOMIZE / path).write_text(content)
        print(f"wrote deploy/kustomize/{path}")


if __name__ == "__main__":
    main()
