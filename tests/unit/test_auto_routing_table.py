"""The routing table: rule matching, policy files, and what a bad file says."""

from __future__ import annotations

from pathlib import Path

import pytest

from iir.v1 import classifier_pb2
from iir_gateway.routing.auto_router import RoutingFileError, Rule, _turns, is_auto, load_policies


def reply(category: str, complexity: str = "simple", language: str = "en", confidence: float = 0.9):  # type: ignore[no-untyped-def]
    return classifier_pb2.ClassifyResponse(
        category=category, complexity=complexity, language=language, category_confidence=confidence
    )


def test_rule_matching() -> None:
    rule = Rule(category=["code", "math"], complexity="hard", model="m")
    assert rule.matches(reply("code", "hard")) and not rule.matches(reply("code", "simple"))
    assert not rule.matches(reply("chat", "hard"))
    assert Rule(model="m").matches(reply("anything"))
    assert not Rule(language=["fr"], model="m").matches(reply("chat"))
    assert not Rule(min_confidence=0.95, model="m").matches(reply("chat", confidence=0.9))


def test_policy_files(tmp_path: Path) -> None:
    assert load_policies("", "local/x")["auto"].default == "local/x"
    good = tmp_path / "routing.yaml"
    good.write_text(
        "policies:\n  auto:\n    default: local/a\n    rules: [{category: [code], model: local/b}]\n"
        "  auto/cheap: {default: local/a}\n"
    )
    policies = load_policies(str(good), "unused")
    assert set(policies) == {"auto", "auto/cheap"} and policies["auto"].rules[0].model == "local/b"
    for text, message in [
        ("policies:\n  auto: {rules: []}\n", "default"),
        ("policies:\n  fast: {default: local/a}\n", "policy names"),
        ("policies:\n  auto: {default: local/a, rules: [{model: m, colour: red}]}\n", "colour"),
        ("policies: [", "cannot read"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(RoutingFileError, match=message):
            load_policies(str(bad), "unused")
    with pytest.raises(RoutingFileError, match="cannot read"):
        load_policies(str(tmp_path / "missing.yaml"), "unused")


def test_what_is_sent_to_the_classifier() -> None:
    turns = _turns(
        {
            "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]},
                {"role": "assistant", "content": None},
            ]
        }
    )
    assert [(t.role, t.content) for t in turns] == [("system", "be nice"), ("user", "hi")]
    assert [t.content for t in _turns({"prompt": "complete me"})] == ["complete me"]
    assert is_auto("auto") and is_auto("auto/cheap") and not is_auto("automatic/x")
