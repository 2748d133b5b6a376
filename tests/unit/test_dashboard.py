"""The Grafana dashboard: every gateway query follows the namespace and instance selectors, and the vLLM
panels use metrics a real vLLM exports (its recorded /metrics)."""

from __future__ import annotations

import json
import re

from iir_dev.stack import REPO

DASHBOARD = json.loads((REPO / "deploy" / "grafana" / "iir-overview.json").read_text())
EXPRS = [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]


def test_gateway_queries_follow_the_namespace_and_instance_selectors() -> None:
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert {"datasource", "namespace", "instance"} <= variables
    for expr in EXPRS:
        for selector in re.findall(r"\biir_[a-z_]+(\{[^}]*\})?", expr):
            assert 'namespace=~"$namespace"' in selector and 'instance=~"$instance"' in selector, expr


def test_vllm_panels_use_metrics_real_vllm_exports() -> None:
    recorded = (REPO / "tests" / "data" / "vllm" / "metrics.txt").read_text()
    exported = set(re.findall(r"^(vllm:[a-z_]+)", recorded, re.M))
    used = {m for e in EXPRS for m in re.findall(r"vllm:[a-z_]+", e)}
    assert {"vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:generation_tokens_total"} <= used
    assert used <= exported, sorted(used - exported)
    for expr in EXPRS:
        if "vllm:" in expr:
            assert 'namespace=~"$namespace"' in expr, expr
