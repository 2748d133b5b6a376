"""Property-based requests generated from the gateway's own OpenAPI schema (schemathesis strategies driven
by hypothesis): no input, valid or not, gets a 5xx. Bounded per operation so it takes a minute or two."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Err
from schemathesis.schemas import APIOperation

from iir_dev.stack import Stack
from tests.conftest import MASTER_KEY

EXAMPLES = 100


def test_no_generated_request_gets_a_5xx(stack: Stack) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.gateway_url}/openapi.json")
    failures = []
    calls: list[str] = []
    results = list(schema.get_all_operations())
    assert not [r.err() for r in results if isinstance(r, Err)]
    operations = [r.ok() for r in results if not isinstance(r, Err)]
    assert len(operations) >= 20

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: schemathesis.Case[APIOperation[Any, Any, Any, Any]]) -> None:
            calls.append(case.formatted_path)
            response = case.call(headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)
            if response.status_code >= 500:
                failures.append(
                    (case.method, case.formatted_path, case.body, response.status_code, response.text[:200])
                )

        check()
    assert len(calls) >= 10 * len(operations)
    assert not failures, failures[:5]
