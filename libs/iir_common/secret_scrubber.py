"""Finds secrets in text and replaces them with `REDACTED`: provider API keys, cloud and VCS tokens,
bearer tokens and JWTs, private key blocks, `password=`-style assignments, credentials in connection
strings, and the values of this process's own secret environment variables.

Each kind has a regular expression and a few literal needles; a kind's expression runs only when one of
its needles is in the lower-cased text, so a clean prompt costs a handful of substring searches. Texts are
also matched normalised (zero-width characters dropped, look-alike letters of other scripts and
compatibility forms made ASCII) and, for kinds with a distinctive prefix, with whitespace removed and the
texts of one request joined, so a key split by a space or across messages is still found.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Mapping

import ahocorasick
import ahocorasick_rs

REDACTED = "REDACTED"

# kind → pattern. Where a pattern has a group named `v`, only that group is replaced (the key name or
# URL around it stays readable); otherwise the whole match is. Token kinds have no leading `\b`: a key
# glued to a word (`xsk-…`, `_AKIA…`) is still a key.
PATTERNS: dict[str, str] = {
    # An END-less block is cut at the first character that cannot be part of one.
    "private_key": r"(?i:-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----)(?:[\s\S]*?(?i:-----END (?:[A-Z0-9]+ )*PRIVATE"
    r" KEY-----)|[A-Za-z0-9+/=\s:,-]*)",
    "anthropic_key": r"sk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{20,}",
    "openai_key": r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}"
    r"|sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}|(?<![A-Za-z0-9])sk-[A-Za-z0-9]{48}\b",
    "iir_key": r"iir-[A-Za-z0-9_-]{30,}",
    "aws_access_key": r"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
    # As an assignment (`aws_secret_access_key = …`, a JSON field, "AWS secret key is …"), or any 40-character
    # base64 run with upper case, lower case and a digit in a text that speaks of AWS.
    "aws_secret_key": r"(?i:aws[\s_-]?secret[\s_-]?(?:access[\s_-]?)?key)[\"']?\s*(?:[=:]|=>|\bis\b)\s*[\"']?"
    r"(?P<v>[A-Za-z0-9/+=]{40})"
    r"|(?i:\baws\b)[\s\S]{0,200}?(?<![A-Za-z0-9/+])(?P<w>(?=[A-Za-z0-9/+]*[A-Z])"
    r"(?=[A-Za-z0-9/+]*[a-z])(?=[A-Za-z0-9/+]*\d)[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
    "github_token": r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})",
    "gitlab_token": r"glpat-[A-Za-z0-9_-]{20,}",
    "slack_token": r"xox[abposr]-[A-Za-z0-9-]{10,}|https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,}",
    "google_api_key": r"AIza[0-9A-Za-z_-]{35}",
    "stripe_key": r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{20,}",
    "jwt": r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    "bearer_token": r"(?i:\bbearer)\s+(?P<v>[A-Za-z0-9._~+/-]{20,}=*)",
    # The password may hold `/`, unless it is a port followed by a path (`host:8080/@user`).
    "connection_string": r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s:/@\"']+:(?!\d+/)(?P<v>[^\s@\"']{3,})@[^\s\"']+",
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
    "iir_key": ("iir-",),
    "aws_access_key": ("akia", "asia", "abia", "acca"),
    "aws_secret_key": ("aws",),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "gitlab_token": ("glpat-",),
    "slack_token": ("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "hooks.slack.com"),
    "google_api_key": ("aiza",),
    "stripe_key": ("_live_", "_test_"),
    "jwt": (("eyj", "."),),
    "bearer_token": ("bearer",),
    "connection_string": (("://", "@"),),
    "password_assignment": (
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "api_key",
        "apikey",
        "access_token",
        "accesstoken",
        "auth_token",
        "authtoken",
    ),
}
# Kinds with a distinctive prefix, also looked for with whitespace removed and texts joined (a key split by
# a space or across messages); prose kinds are not, or "password: must be 8 long" would become one.
TOKEN_KINDS = (
    "private_key",
    "anthropic_key",
    "openai_key",
    "iir_key",
    "aws_access_key",
    "github_token",
    "gitlab_token",
    "slack_token",
    "google_api_key",
    "stripe_key",
    "jwt",
)
# Invisible characters dropped before matching, and letters of other scripts that look like Latin ones.
ZERO_WIDTH = "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e\u034f"
HOMOGLYPHS = dict(
    zip(
        "аеорсухкмтнвіјѕԁԛԝґАВЕКМНОРСТХІЈЅαορνκιτυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
        "aeopcyxkmthbijsdqwrABEKMHOPCTXIJSaopvkituxABEZHIKMNOPTYX",
        strict=True,
    )
)
_TRANSLATE = {**{ord(c): None for c in ZERO_WIDTH}, **{ord(k): v for k, v in HOMOGLYPHS.items()}}
SECRET_ENV_NAME = re.compile(r"(?i)(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)")


def secret_env_values(environ: Mapping[str, str] | None = None, min_length: int = 8) -> list[str]:
    """Values of environment variables whose names say they are secret (and long enough to be one)."""
    env = os.environ if environ is None else environ
    return sorted(
        {v for k, v in env.items() if SECRET_ENV_NAME.search(k) and len(v) >= min_length}, key=len, reverse=True
    )


def normal_char(c: str) -> str:
    """One character as matched: invisible ones dropped, look-alikes and compatibility forms made ASCII."""
    if c.isascii():
        return c
    if c in ZERO_WIDTH:
        return ""
    if c in HOMOGLYPHS:
        return HOMOGLYPHS[c]
    n = unicodedata.normalize("NFKC", c)
    return n if n.isascii() else c


def _fast_view(text: str, drop_space: bool) -> str:
    """The matched view of `text` at C speed (a prefilter: `_view` is the exact one)."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text.translate(_TRANSLATE))
    return "".join(text.split()) if drop_space else text


def _view(texts: list[str], drop_space: bool) -> tuple[str, list[tuple[int, int]]]:
    """The texts normalised and joined (directly, or by newlines), with each view character's origin."""
    chars: list[str] = []
    origin: list[tuple[int, int]] = []
    for si, text in enumerate(texts):
        if si and not drop_space:
            chars.append("\n")
            origin.append((si, 0))
        for ci, c in enumerate(text):
            n = normal_char(c)
            if drop_space and n.isspace():
                continue
            chars.extend(n)
            origin.extend([(si, ci)] * len(n))
    return "".join(chars), origin


class SecretScrubber:
    def __init__(self, literals: Iterable[str] = ()) -> None:
        self.literals = [lit for lit in literals if lit]
        self._env = re.compile("|".join(re.escape(lit) for lit in self.literals)) if self.literals else None
        self._checks = [(kind, NEEDLES[kind], re.compile(pattern)) for kind, pattern in PATTERNS.items()]
        self._token_checks = [c for c in self._checks if c[0] in TOKEN_KINDS]
        # Every needle in one Aho-Corasick automaton: one pass over a stream chunk, whatever their number.
        self._automaton = ahocorasick.Automaton()
        for needles in NEEDLES.values():
            for needle in needles:
                first = needle if isinstance(needle, str) else needle[0]
                self._automaton.add_word(first, first)
        self._automaton.make_automaton()
        # The same first parts over bytes, for `may_hold_secret` on whole bodies: the Rust automaton's SIMD
        # prefilters pass clean text several times faster. Joined across whitespace, only token kinds count.
        firsts = {kind: {(n if isinstance(n, str) else n[0]).encode() for n in NEEDLES[kind]} for kind in NEEDLES}
        self._bytes_any = ahocorasick_rs.BytesAhoCorasick(sorted(set().union(*firsts.values())))
        self._bytes_tokens = ahocorasick_rs.BytesAhoCorasick(sorted(set().union(*(firsts[k] for k in TOKEN_KINDS))))
        self._byte_literals = [lit.encode() for lit in self.literals]

    def needles_in(self, low: str) -> list[tuple[int, str]]:
        """(end index, needle) of every needle in lower-cased `low`."""
        return list(self._automaton.iter(low))

    def spans(self, text: str) -> tuple[list[tuple[int, int]], set[str]]:
        """Where the secrets of `text` are (what `scrub` would replace), matched as it is and, when it has
        non-ASCII characters, normalised; and their kinds."""
        spans: list[tuple[int, int]] = []
        found: set[str] = set()
        for kind, regex in self._candidates(text):
            for m in regex.finditer(text):
                spans.append(whole_escapes(text, *m.span(_secret_group(m))))
                found.add(kind)
        if not text.isascii():
            view_spans, view_found = self._view_spans([text], drop_space=False, checks=self._checks)
            spans += [whole_escapes(text, *span) for span in view_spans.get(0, [])]
            found |= view_found
        return _merged([span for span in spans if span[0] < span[1]]), found

    def _candidates(
        self, text: str, checks: list[tuple[str, tuple[str | tuple[str, ...], ...], re.Pattern[str]]] | None = None
    ) -> list[tuple[str, re.Pattern[str]]]:
        low = text.lower()
        out = []
        if checks is None:
            checks = self._checks
            if self._env and any(lit in text for lit in self.literals):
                out.append(("environment_secret", self._env))
        if next(self._automaton.iter(low), None) is None:
            return out
        for kind, needles, regex in checks:
            for needle in needles:
                if (needle in low) if isinstance(needle, str) else all(part in low for part in needle):
                    out.append((kind, regex))
                    break
        return out

    def holds_literal(self, text: str) -> bool:
        """Whether `text` holds one of this process's own secret values (they have no needle)."""
        return any(lit in text for lit in self.literals)

    def may_hold_secret(self, data: bytes, split: bool = True) -> bool:
        """False when `data` surely holds none (a few substring searches, no decoding); `split`: also look
        for keys split by whitespace."""
        if not data.isascii():  # invisible or look-alike characters: only the full check can tell
            return True
        low = data.lower()
        if self._bytes_any.find_matches_as_indexes(low):
            return True
        if any(lit in data for lit in self._byte_literals):
            return True
        if not split:
            return False
        # Whitespace removed, only kinds with a distinctive prefix are matched (as `scrub_texts` does).
        return bool(self._bytes_tokens.find_matches_as_indexes(b"".join(low.split())))

    def scrub_bytes(self, data: bytes, split: bool = True) -> tuple[bytes, set[str]]:
        """`scrub` for UTF-8 bytes; clean data is returned as is, without decoding."""
        if not self.may_hold_secret(data, split):
            return data, set()
        text, found = self.scrub(data.decode("utf-8", errors="surrogateescape"))
        return (text.encode("utf-8", errors="surrogateescape"), found) if found else (data, found)

    def find(self, text: str) -> set[str]:
        """The kinds of secrets in `text`."""
        return self.scrub(text)[1]

    def scrub(self, text: str) -> tuple[str, set[str]]:
        """`text` with every secret replaced by REDACTED, and the kinds found."""
        texts, found = self.scrub_texts([text])
        return texts[0], found

    def scrub_texts(self, texts: list[str]) -> tuple[list[str], set[str]]:
        """Several texts of one request, redacted together: each as it is; then normalised (invisible and
        look-alike characters); then, for token kinds, with whitespace removed and the texts joined."""
        found: set[str] = set()
        out = []
        for text in texts:
            for kind, regex in self._candidates(text):
                text, count = regex.subn(_replace, text)
                if count:
                    found.add(kind)
            out.append(text)
        if not all(t.isascii() for t in out):
            found |= self._evasions(out, drop_space=False, checks=self._checks)
        found |= self._evasions(out, drop_space=True, checks=self._token_checks)
        return out, found

    def _evasions(
        self,
        texts: list[str],
        drop_space: bool,
        checks: list[tuple[str, tuple[str | tuple[str, ...], ...], re.Pattern[str]]],
    ) -> set[str]:
        """Redacts, in `texts` (in place), what matches in their normalised view; returns the kinds."""
        spans, found = self._view_spans(texts, drop_space, checks)
        for si, ranges in spans.items():
            text = texts[si]
            for start, end in _merged([whole_escapes(text, *r) for r in ranges])[::-1]:
                text = text[:start] + REDACTED + text[end:]
            texts[si] = text
        return found

    def _view_spans(
        self,
        texts: list[str],
        drop_space: bool,
        checks: list[tuple[str, tuple[str | tuple[str, ...], ...], re.Pattern[str]]],
    ) -> tuple[dict[int, list[tuple[int, int]]], set[str]]:
        """What matches in the texts' normalised view (joined directly when `drop_space`, else by newlines),
        as character ranges of each text (by index), and the kinds."""
        joiner = "" if drop_space else "\n"
        fast = joiner.join(_fast_view(t, drop_space) for t in texts)
        hits = [(kind, regex) for kind, regex in self._candidates(fast, checks) if regex.search(fast)]
        spans: dict[int, list[tuple[int, int]]] = {}
        found: set[str] = set()
        if not hits:
            return spans, found
        view, origin = _view(texts, drop_space)
        for kind, regex in hits:
            for m in regex.finditer(view):
                group = _secret_group(m)
                start, end = m.span(group)
                if drop_space:
                    end = start + _random_end(texts, origin[start:end])
                    if end == start or not regex.fullmatch(view, m.start(), end if not group else m.end()):
                        continue
                found.add(kind)
                by_text: dict[int, list[int]] = {}
                for si, ci in origin[start:end]:
                    by_text.setdefault(si, []).append(ci)
                for si, cis in by_text.items():
                    spans.setdefault(si, []).append((min(cis), max(cis) + 1))
        return spans, found


def _random_end(texts: list[str], origin: list[tuple[int, int]]) -> int:
    """For a match made by removing whitespace or joining texts: how many of its view characters are made
    of random-looking pieces, each with a digit or an inner capital (`AbC12 dEf34`), unlike prose
    (`iir-gateway runs on port 8080`). Pieces after the first prose-like one are cut off; 0 if it is first."""
    pieces: list[tuple[str, int]] = []  # (original text, view length)
    last: tuple[int, int] | None = None
    for si, ci in origin:
        if last is None or (si != last[0] or any(c.isspace() for c in texts[si][last[1] + 1 : ci])):
            pieces.append(("", 0))
        text, length = pieces[-1]
        pieces[-1] = (text + (texts[si][ci] if (si, ci) != last else ""), length + 1)
        last = (si, ci)
    end = 0
    for text, length in pieces:
        if not (any(c.isdigit() for c in text) or any(c.isupper() for c in text[1:])):
            break
        end += length
    return end


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _secret_group(m: re.Match[str]) -> str | int:
    """The group holding the secret itself (`v` or `w`, the name around it stays readable), else 0: all."""
    return next((g for g in ("v", "w") if g in m.re.groupindex and m.group(g) is not None), 0)


def _escaped(text: str, i: int) -> bool:
    """Whether `text[i]` follows an odd run of backslashes (the second half of an escape such as `\\"`)."""
    run = 0
    while i - run > 0 and text[i - run - 1] == "\\":
        run += 1
    return run % 2 == 1


def whole_escapes(text: str, start: int, end: int) -> tuple[int, int]:
    """The span `start:end` narrowed so that it cuts no backslash escape (`\\"`, `\\n`, `\\u00e9`) in two:
    JSON text (tool-call arguments, an answer's raw bytes) stays valid JSON with the span redacted."""
    if start < end and _escaped(text, start):  # keep the escaped character with its backslash
        hex_digits = text[start + 1 : start + 5]
        start += 5 if text[start] == "u" and len(hex_digits) == 4 and all(c in _HEX for c in hex_digits) else 1
    if start < end < len(text) and _escaped(text, end):  # the backslash before `end` escapes what follows
        end -= 1
    return start, max(start, end)


_HEX = frozenset("0123456789abcdefABCDEF")


def _replace(m: re.Match[str]) -> str:
    start, end = whole_escapes(m.string, *m.span(_secret_group(m)))
    return m.string[m.start() : start] + REDACTED + m.string[end : m.end()]
