"""Sessions from what agents already send, scoped to the calling key."""

from __future__ import annotations

from iir_gateway.picking.session import session_of


def test_headers_then_body_fields() -> None:
    assert session_of({"x-session-id": "s"}, {"user": "u"}, "k1") == "k1:s"
    assert session_of({"x-claude-code-session-id": "cc"}, {}, "k1") == "k1:cc"
    assert session_of({"session_id": "codex"}, {}, "k1") == "k1:codex"
    assert session_of({}, {"prompt_cache_key": "p", "user": "u"}, "k1") == "k1:p"
    assert session_of({}, {"metadata": {"user_id": "user_x_session_1"}}, "k1") == "k1:user_x_session_1"
    assert session_of({}, {"user": "u"}, "k1") == "k1:u"
    assert session_of({}, {}, "k1") == ""


def test_made_up_values_cannot_reach_another_key_or_grow_without_bound() -> None:
    assert session_of({}, {"user": "u"}, "k1") != session_of({}, {"user": "u"}, "k2")
    assert session_of({}, {"user": ["not", "a", "string"]}, "k1") == ""
    assert len(session_of({"x-session-id": "x" * 10_000}, {}, "k")) == 2 + 256
