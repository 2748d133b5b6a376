"""A bad providers file stops the gateway process with one clear line, and the API fakes as processes
(for tests/security/). The providers themselves, through the gateway app, are tested in
tests/gateway/test_providers.py."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from iir_dev import datastores
from iir_dev.stack import REPO, http_ok
from tests.waiting import wait_for

OPENAI_KEY = "sk-test-" + uuid.uuid4().hex


def start_fake(module: str, key: str) -> tuple[subprocess.Popen[bytes], str]:
    port = datastores.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", f"tests.fakes.{module}", "--port", str(port), "--key", key],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    if wait_for(lambda: http_ok(f"{url}/_calls"), timeout=10, interval=0.1):
        return proc, url
    proc.kill()
    raise RuntimeError(f"fake {module} did not start")


def test_a_bad_providers_file_stops_the_gateway_with_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "providers.yaml"
    bad.write_text("providers:\n  openai:\n    base_url: ftp://nowhere\n")
    proc = subprocess.run(
        [sys.executable, "-m", "iir_gateway"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "IIR_PROVIDERS_FILE": str(bad)},
        timeout=30,
    )
    assert proc.returncode == 1
    assert "providers.openai.base_url" in proc.stderr and "Traceback" not in proc.stderr
