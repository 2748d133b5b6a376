"""Decoded JSON bodies as the types the tests read them as."""

from __future__ import annotations

from typing import Any


def json_object(value: Any) -> dict[str, Any]:
    """`value` (decoded JSON) as an object; fails the test when it is something else."""
    assert isinstance(value, dict), value
    return value
