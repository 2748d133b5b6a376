"""`make classifier-model` takes the CPU build of torch, as the Dockerfile does: on Linux x86_64 PyPI's torch
is the CUDA build, whose nvidia-* wheels (several GB) exporting a small encoder never uses."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.waiting import unavailable

REPO = Path(__file__).resolve().parents[2]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def pinned_torch() -> str:
    """The torch requirement of the `classifier-build` extra in pyproject.toml."""
    extra = re.search(r"^classifier-build = \[(.*?)\]", (REPO / "pyproject.toml").read_text(), re.M | re.S)
    assert extra, "pyproject.toml has no classifier-build extra"
    pins: list[str] = [r for r in re.findall(r'"([^"]+)"', extra.group(1)) if re.match(r"torch\b", r)]
    assert len(pins) == 1 and pins[0].startswith("torch=="), f"torch must be pinned exactly: {pins}"
    return pins[0]


def classifier_build_installs(tmp_path: Path) -> list[list[str]]:
    """The pip installs `make` runs to prepare the classifier build (in a venv whose `make install` is
    done), in their order in the recipe."""
    if not shutil.which("make"):
        unavailable("make is not installed")
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed").touch()  # newer than pyproject.toml and constraints.txt: `install` is up to date
    recipe = subprocess.run(
        ["make", "-n", f"VENV={venv}", f"{venv}/.classifier-build"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("\\\n", " ")
    return [shlex.split(c)[4:] for c in re.findall(r"\S+/python -m pip install [^;\n]*", recipe)]


def test_the_classifier_build_installs_torch_from_the_cpu_index_first(tmp_path: Path) -> None:
    installs = classifier_build_installs(tmp_path)
    torch = pinned_torch()
    extra = next((i for i, c in enumerate(installs) if ".[classifier-build]" in c), None)
    assert extra is not None, installs
    from_cpu_index = [
        i
        for i, c in enumerate(installs[:extra])
        if torch in c
        and CPU_INDEX in [c[j + 1] for j, a in enumerate(c[:-1]) if a in ("--index-url", "--extra-index-url")]
    ]
    assert from_cpu_index, f"{torch} is not installed from PyTorch's CPU index before the rest: {installs}"
    assert "-c" in installs[from_cpu_index[0]], "torch's dependencies are not held to constraints.txt"


def test_the_dockerfile_takes_the_same_cpu_torch() -> None:
    install = re.search(r'pip install -q "(torch==[^"]+)" --index-url (\S+)', (REPO / "Dockerfile").read_text())
    assert install, "the Dockerfile's classifier-model stage does not install torch from an index of its own"
    assert (install.group(1), install.group(2)) == (pinned_torch(), CPU_INDEX)
