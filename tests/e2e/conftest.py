"""End-to-end tests against a real cluster (kind, k3d or any other), run only when KUBECONFIG points at one."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _cluster_problem() -> str | None:
    if not os.environ.get("KUBECONFIG"):
        return "KUBECONFIG is not set: the e2e suite needs a real cluster (e.g. `kind create cluster`)"
    if not shutil.which("kubectl"):
        return "kubectl is not on PATH"
    probe = subprocess.run(["kubectl", "version", "--request-timeout=5s"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"the cluster in KUBECONFIG does not answer: {probe.stderr.strip()[:200]}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problem = _cluster_problem() if any("e2e" in item.keywords for item in items) else None
    if problem:
        skip = pytest.mark.skip(reason=f"e2e skipped: {problem}")
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(skip)
