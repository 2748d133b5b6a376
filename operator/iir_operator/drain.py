"""The vLLM pods' preStop hook: wait until the replica has no request running or waiting, bounded by
`spec.drainTimeoutSeconds`. Kubernetes marks the endpoint terminating first, so gateways stop sending it
new requests while the ones in flight, streams included, finish.

The hook runs inside the vLLM image, which has Python but not this package: `DRAIN_SCRIPT` is the whole
program, passed to `python3 -c` with the port and the timeout.
"""

from __future__ import annotations

DRAIN_SCRIPT = """
import sys, time, urllib.request
port, timeout = int(sys.argv[1]), float(sys.argv[2])
deadline = time.monotonic() + timeout
time.sleep(min(3.0, timeout))  # let the endpoint's terminating state reach the gateways
while time.monotonic() < deadline:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except Exception:
        break  # the server is gone or broken: nothing left to wait for
    busy = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting"))
    )
    if busy == 0:
        break
    time.sleep(0.5)
"""


def pre_stop(port: int, timeout_s: int) -> dict[str, object]:
    """The container's `lifecycle.preStop` handler."""
    return {"exec": {"command": ["python3", "-c", DRAIN_SCRIPT, str(port), str(timeout_s)]}}
