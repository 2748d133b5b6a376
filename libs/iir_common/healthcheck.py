"""Container health checks without curl or grpc_health_probe in the image.

python -m iir_common.healthcheck http://127.0.0.1:8080/health/live
python -m iir_common.healthcheck grpc 50051 iir.v1.AuthService
"""

from __future__ import annotations

import sys
import urllib.request


def check(args: list[str]) -> bool:
    if args and args[0] == "grpc":
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        port, service = args[1], args[2] if len(args) > 2 else ""
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    with urllib.request.urlopen(args[0], timeout=3) as resp:
        return bool(resp.status == 200)


if __name__ == "__main__":
    try:
        sys.exit(0 if check(sys.argv[1:]) else 1)
    except Exception as exc:  # any failure is "unhealthy", said in one line
        print(f"unhealthy: {exc}", file=sys.stderr)
        sys.exit(1)
