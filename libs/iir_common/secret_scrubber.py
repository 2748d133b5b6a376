"""Finds secrets in text and replaces them with `REDACTED`: provider API keys, cloud and VCS tokens,
bearer tokens and JWTs, private key blocks, `password=`-style assignments, credentials in connection
strings, and the values of this process's own secret environment variables.

Each kind has a regular expression and a few literal needles; a kind's expression runs only when one of
its needles is in the lower-cased text, so a clean prompt costs a handful of substring searches.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import ahocorasick

REDACTED = "REDACTED"

# kind → pattern. Where a pattern has a group named `v`, only that group is replaced (the key name or
# URL around it stays readable); otherwise the whole match is.
PATTERNS: dict[str, str] = {
    "private_key": r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    "anthropic_key": r"\bsk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{20,}",
    "openai_key": r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}"
                  r"|\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}|\bsk-[A-Za-z0-9]{48}\b",
    "aws_access_key": r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
    "aws_secret_key": r"(?i:aws_?secret_?(?:access_?)?key)\s*[=:]\s*[\"']?(?P<v>[A-Za-z0-9/+=]{40})",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})",
    "gitlab_token": r"\bglpat-[A-Za-z0-9_-]{20,}",
    "slack_token": r"\bxox[abposr]-[A-Za-z0-9-]{10,}|https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,}",
    "google_api_key": r"\bAIza[0-9A-Za-z_-]{35}",
    "stripe_key": r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{20,}",
    "jwt": r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    "bearer_token": r"(?i:\bbearer)\s+(?P<v>[A-Za-z0-9._~+/-]{20,}=*)",
    "connection_string": r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s:/@\"']+:(?P<v>[^\s@/\"']{3,})@[^\s\"']+",
    # A value needs a digit or a symbol (prose "the secret: nobody" is not one) and must not be code
    # (`password = get_password()`, `api_key: Optional[str]`).
    "password_assignment": r"(?i:\b(?:password|passwd|pwd|passphrase|secret|secret_?key|client_secret|api_?key"
                           r"|access_?token|auth_?token)\b)[\"']?\s*[=:]\s*[\"']?"
                           r"(?P<v>(?=[^\s\"',;&()\[\]]*[\d!@#$%^*_+=~-])[^\s\"',;&()\[\]]{6,})(?![\w(\[.])",
}
# kind → needles (lower case): the pattern runs when one needle is present; a tuple needs all its parts.
NEEDLES: dict[str, tuple[str | tuple[str, ...], ...]] = {
    "private_key": ("private key-----",),
    "anthropic_key": ("sk-ant-",),
    "openai_key": ("sk-",),
    "aws_access_key": ("akia", "asia", "abia", "acca"),
    "aws_secret_key": ("secret",),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "gitlab_token": ("glpat-",),
    "slack_token": ("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "hooks.slack.com"),
    "google_api_key": ("aiza",),
    "stripe_key": ("_live_", "_test_"),
    "jwt": (("eyj", "."),),
    "bearer_token": ("bearer",),
    "connection_string": (("://", "@"),),
    "password_assignment": ("password", "passwd", "pwd", "passphrase", "secret", "api_key", "apikey",
                            "access_token", "accesstoken", "auth_token", "authtoken"),
}
SECRET_ENV_NAME = re.compile(r"(?i)(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)")


def secret_env_values(environ: Mapping[str, str] | None = None, min_length: int = 8) -> list[str]:
    """Values of environment variables whose names say they are secret (and long enough to be one)."""
    env = os.environ if environ is None else environ
    return sorted({v for k, v in env.items() if SECRET_ENV_NAME.search(k) and len(v) >= min_length}, key=len,
                  reverse=True)


class SecretScrubber:
    def __init__(self, literals: Iterable[str] = ()) -> None:
        self.literals = [lit for lit in literals if lit]
        self._env = re.compile("|".join(re.escape(lit) for lit in self.literals)) if self.literals else None
        self._checks = [(kind, NEEDLES[kind], re.compile(pattern)) for kind, pattern in PATTERNS.items()]
        # Every needle in one Aho-Corasick automaton: one pass over a stream chunk, whatever their number.
        self._automaton = ahocorasick.Automaton()
        for needles in NEEDLES.values():
            for needle in needles:
                first = needle if isinstance(needle, str) else needle[0]
                self._automaton.add_word(first, first)
        self._automaton.make_automaton()
        self._byte_literals = [lit.encode() for lit in self.literals]

    def _candidates(self, text: str) -> list[tuple[str, re.Pattern[str]]]:
        low = text.lower()
        out = [("environment_secret", self._env)] if self._env and any(lit in text for lit in self.literals) else []
        if next(self._automaton.iter(low), None) is None:
            return out
        for kind, needles, regex in self._checks:
            for needle in needles:
                if (needle in low) if isinstance(needle, str) else all(part in low for part in needle):
                    out.append((kind, regex))
                    break
        return out

    def may_hold_secret(self, data: bytes) -> bool:
        """False when `data` surely holds none (a few substring searches, no decoding)."""
        # Needles are ASCII: latin-1 decoding of the lower-cased bytes cannot invent one.
        if next(self._automaton.iter(data.lower().decode("latin-1")), None) is not None:
            return True
        return any(lit in data for lit in self._byte_literals)

    def scrub_bytes(self, data: bytes) -> tuple[bytes, set[str]]:
        """`scrub` for UTF-8 bytes; clean data is returned as is, without decoding."""
        if not self.may_hold_secret(data):
            return data, set()
        text, found = self.scrub(data.decode("utf-8", errors="surrogateescape"))
        return (text.encode("utf-8", errors="surrogateescape"), found) if found else (data, found)

    def find(self, text: str) -> set[str]:
        """The kinds of secrets in `text`."""
        return {kind for kind, regex in self._candidates(text) if regex.search(text)}

    def scrub(self, text: str) -> tuple[str, set[str]]:
        """`text` with every secret replaced by REDACTED, and the kinds found."""
        found: set[str] = set()
        for kind, regex in self._candidates(text):
            text, count = regex.subn(_replace, text)
            if count:
                found.add(kind)
        return text, found


def _replace(m: re.Match[str]) -> str:
    if "v" in m.re.groupindex and m.group("v") is not None:
        start, end = m.span("v")
        return m.group(0)[: start - m.start()] + REDACTED + m.group(0)[end - m.start():]
    return REDACTED
