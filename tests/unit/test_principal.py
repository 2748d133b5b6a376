"""A principal stored with a job or batch comes back whole, its user's and team's scopes included."""

from __future__ import annotations

import orjson

from iir_gateway.principal import Principal, Scope


def test_a_stored_principal_comes_back_with_its_scopes() -> None:
    team = Scope("team", "t1", "search", rpm_limit=5, max_budget=2.5, budget_duration="7d", allowed_models=("local/*",))
    p = Principal("k1", "key", False, 3, ("local/a",), max_budget=1.0, team_id="t1", team_name="search", owners=(team,))
    back = Principal.from_dict(orjson.loads(orjson.dumps(p.to_dict())))
    assert back == p and back.scopes[1] == team and back.limited and back.spends_money
    assert Principal.from_dict(p.to_dict(), priority=0).priority == 0
    # A principal stored by an older gateway (fewer fields, none unknown to it) still loads.
    old = {"key_id": "k2", "name": "n", "admin": False, "priority": 1, "allowed_models": [], "gone": 1}
    assert Principal.from_dict(old).owners == ()


def test_a_team_bounds_the_models_of_its_keys() -> None:
    team = Scope("team", "t1", "search", allowed_models=("local/*",))
    assert Principal("k", "n", False, 0, (), owners=(team,)).may_use("local/x")
    assert not Principal("k", "n", False, 0, (), owners=(team,)).may_use("openai/gpt-4o")
    assert not Principal("k", "n", False, 0, ("openai/*",), owners=(team,)).may_use("openai/gpt-4o")
