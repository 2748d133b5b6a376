"""Files the chart must carry a copy of (Helm cannot read outside its folder) stay equal to their source."""

from __future__ import annotations

from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COPIES = [(DEPLOY / "crds" / f.name, f) for f in sorted((DEPLOY / "helm" / "iir" / "crds").iterdir())] + [
    (DEPLOY / "grafana" / f.name, f) for f in sorted((DEPLOY / "helm" / "iir" / "dashboards").iterdir())
]


@pytest.mark.parametrize(("source", "copy"), COPIES, ids=lambda p: p.name)
def test_the_chart_carries_the_same_file(source: Path, copy: Path) -> None:
    assert source.exists(), f"{copy} has no source at {source}"
    assert copy.read_bytes() == source.read_bytes(), f"{copy} differs from {source}: copy the source over it"
