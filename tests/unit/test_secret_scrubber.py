"""The scrubber on a corpus of real-looking fake secrets and innocent look-alikes (recall and false
positives are stated in the README), and the request-body walk."""

from __future__ import annotations

from pathlib import Path

import pytest

from iir_common.secret_scrubber import NEEDLES, REDACTED, SecretScrubber, secret_env_values
from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.scrubbing.policy import Scrubbing

CORPUS = Path(__file__).resolve().parents[1] / "data" / "secrets_corpus.tsv"
ENV_SECRET = "IIR-TEST-ENV-SECRET-0123456789"


def corpus() -> list[tuple[str, str]]:
    rows = []
    for line in CORPUS.read_text().splitlines()[1:]:
        kind, text = line.split("\t", 1)
        rows.append((kind, text.replace("\\n", "\n").replace("\\\\", "\\")))
    return rows


def test_corpus_recall_and_false_positives() -> None:
    scrubber = SecretScrubber([ENV_SECRET])
    secrets = [(k, t) for k, t in corpus() if k != "none"]
    innocents = [t for k, t in corpus() if k == "none"]
    missed = [t for _, t in secrets if not scrubber.find(t)]
    flagged = [(t[:60], scrubber.find(t)) for t in innocents if scrubber.find(t)]
    assert len(secrets) >= 35 and len(innocents) >= 25
    assert not missed, f"recall {1 - len(missed) / len(secrets):.2f}: missed {missed}"
    assert not flagged, f"false positives: {flagged}"
    exact = sum(k in scrubber.find(t) for k, t in secrets) / len(secrets)
    assert exact >= 0.9  # the kind named is the right one (overlaps such as api_key="sk-…" name the assignment)


def test_redaction_keeps_the_context_readable() -> None:
    scrubber = SecretScrubber()
    assert scrubber.scrub("postgres://app:pa55w0rd@db:5432/x")[0] == f"postgres://app:{REDACTED}@db:5432/x"
    assert scrubber.scrub("password: Tr0ub4dor!3 ok")[0] == f"password: {REDACTED} ok"
    text, kinds = scrubber.scrub("-----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY----- done")
    assert text == f"{REDACTED} done" and kinds == {"private_key"}


def test_secret_environment_values() -> None:
    env = {"OPENAI_API_KEY": "sk-something-long", "DB_PASSWORD": "longenough", "HOME": "/root", "SHORT_KEY": "abc"}
    assert secret_env_values(env) == ["sk-something-long", "longenough"]


def test_request_bodies_are_walked_and_modes_apply() -> None:
    scrubbing = Scrubbing(SecretScrubber(), "redact", GatewayMetrics())
    body = {
        "messages": [
            {"role": "user", "content": "key AKIAIOSFODNN7EXAMPLE"},
            {"role": "user", "content": [{"type": "text", "text": "token ghp_" + "a" * 36}]},
            {"role": "assistant", "tool_calls": [{"function": {"arguments": '{"pwd": "s3cret!!"}'}}]},
        ]
    }
    original = str(body)
    scrubbed, found = scrubbing.request(body, "redact")
    assert found == {"aws_access_key", "github_token", "password_assignment"}
    assert "AKIA" not in str(scrubbed) and "ghp_" not in str(scrubbed) and "s3cret" not in str(scrubbed)
    assert str(body) == original  # a scrubbed copy: the caller's body is left as it was
    with pytest.raises(APIError) as blocked:
        scrubbing.request({"prompt": "AKIAIOSFODNN7EXAMPLE"}, "block")
    assert blocked.value.status == 400 and blocked.value.code == "secret_detected"
    assert blocked.value.headers["x-iir-scrubbed"] == "aws_access_key"
    untouched = {"input": ["AKIAIOSFODNN7EXAMPLE"]}
    assert scrubbing.request(untouched, "off") == (untouched, set())


EVASIONS = Path(__file__).resolve().parents[1] / "data" / "secrets_evasions.tsv"


def evasions() -> list[tuple[str, str, list[str]]]:
    rows = []
    for line in EVASIONS.read_text().splitlines():
        if line.startswith("#"):
            continue
        kind, hidden, text = line.split("\t", 2)
        rows.append((kind, hidden, text.replace("\\n", "\n").split("␞")))
    return rows


def test_evasions_are_caught_and_look_alikes_are_left() -> None:
    scrubber = SecretScrubber()
    cases = [(k, h, t) for k, h, t in evasions() if k != "none"]
    leaked = []
    for kind, hidden, texts in cases:
        out, kinds = scrubber.scrub_texts(list(texts))
        if hidden in "".join(out) or kind not in kinds:
            leaked.append((kind, texts, out, kinds))
    assert len(cases) >= 30
    assert not leaked, f"recall {1 - len(leaked) / len(cases):.2f}; leaked: {leaked}"
    flagged = [
        (t, scrubber.scrub_texts(list(t))) for k, _, t in evasions() if k == "none" if scrubber.scrub_texts(list(t))[1]
    ]
    assert not flagged, f"false positives: {flagged}"


def test_the_quick_check_agrees_with_the_scrubber_on_every_needle_and_evasion() -> None:
    # `may_hold_secret` may say yes to a clean text, never no to one the scrubber would change.
    scrubber = SecretScrubber()
    firsts = {n if isinstance(n, str) else n[0] for needles in NEEDLES.values() for n in needles}
    for needle in firsts:
        assert scrubber.may_hold_secret(f"Some text, {needle.upper()} and more".encode(), split=False), needle
    texts = [" ".join(t) for k, _, t in evasions() if k != "none"]
    texts += [f"here is the key: {s}" for s in ("sk- proj-" + "a" * 40, "ghp _" + "b" * 36, "AKIA Q7RTX2EXAMPL3KEY")]
    for text in texts:
        if scrubber.scrub(text)[1]:
            assert scrubber.may_hold_secret(text.encode()), text
    assert not scrubber.may_hold_secret(b"The order left the warehouse and should arrive on Friday.")
