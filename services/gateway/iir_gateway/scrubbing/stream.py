"""Scrubbing a streamed answer whose secrets may be spelled over many chunks (real vLLM sends about one
token per chunk, and a model can be made to send one character per chunk).

Each choice's text passes untouched while no needle (`sk-`, `password`, `-----begin`…) completes in it;
the last characters already sent are kept as context, so a needle spelled across chunks is seen. From
the needle on, text is held until the candidate is resolved (its token ended, a few words followed an
assignment, the key block ended, or the stream ended), then released with the secret's characters
redacted, matched together with the context before it. Only the needle itself can have left before it
was recognised, never what follows it. A clean chunk is relayed as the bytes that came.

Tool-call arguments (`delta.tool_calls[].function.arguments`) are held the same way, one holder per
(choice, call): what a call held is released when another call of its choice begins, when the choice
finishes, or at the stream's end; a choice's held text is released when its first tool call begins, so
the order of text and calls is kept. Released early (another call or the calls begin), a candidate still
open is redacted whole and the rest of its token dropped as it comes. A redaction never cuts a JSON
escape, so arguments stay JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from iir_common.secret_scrubber import NEEDLES, REDACTED, TOKEN_KINDS, SecretScrubber, normal_char
from iir_gateway.answer import Event
from iir_gateway.scrubbing.skeleton import TEXT_FIELDS, TextSkeleton, decode

# Released text kept per choice to see needles across chunks and to match a secret with its start.
_CONTEXT = 96
# After a prose needle (`password`, `bearer`, `aws`, `://`): how many words, and at most how many characters.
_PROSE_WORDS = 6
_PROSE_CHARS = 256
_TOKEN_CHARS = 512
_BLOCK_CHARS = 8192
_TOKEN_CHARSET = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-./+=")
# Characters of ASCII context a needle may have begun in (the longest needle, less its last character).
_NEEDLE_REACH = max(len(n if isinstance(n, str) else n[0]) for needles in NEEDLES.values() for n in needles) - 1
_NEEDLE_KIND = {(n if isinstance(n, str) else n[0]): kind for kind, needles in NEEDLES.items() for n in needles}


def _lowered(text: str) -> tuple[str, list[int] | None]:
    """`text` as needles are matched (lower case; invisible characters dropped, look-alikes made ASCII),
    with each character's index in `text` when they differ."""
    if text.isascii():
        return text.lower(), None
    parts = [(normal_char(c).lower(), i) for i, c in enumerate(text)]
    return "".join(p for p, _ in parts), [i for p, i in parts for _ in p]


class _Choice:
    __slots__ = ("context", "held", "tail")

    def __init__(self) -> None:
        self.context = ""  # the end of what was released
        self.held = ""  # what waits for its candidate to resolve
        self.tail = False  # an open candidate was redacted early: the rest of its token is dropped


class StreamScrubber:
    def __init__(self, scrubber: SecretScrubber, on_found: Callable[[set[str]], None]) -> None:
        self.scrubber = scrubber
        self.on_found = on_found
        self.choices: dict[tuple[int, str], _Choice] = {}
        self.calls: dict[int, dict[int, _Choice]] = {}  # choice index → tool call index → its arguments
        self._tails: set[int] = set()  # choices whose text was cut in an open candidate by their first call
        self._template: dict[str, Any] | None = None
        self._skeleton = TextSkeleton()

    def feed(self, event: Event) -> Sequence[Event]:
        """One event in; the same event out with its text released or held (as a new event if changed)."""
        return self.feed_all((event,))

    def feed_all(self, events: Sequence[Event]) -> Sequence[Event]:
        """`feed` for the events of one read. Those that fit the stream's text skeleton pass as they
        came, unparsed, when nothing is held and no needle completes in their text (joined, after what
        was sent before); the others are parsed."""
        skeleton = self._skeleton
        out: list[Event] = []
        texts: list[bytes] = []  # of the events that fit the skeleton, in a row: checked together
        prefix, suffix = skeleton.prefix, skeleton.suffix
        start, end, around = len(prefix), -len(suffix), len(prefix) + len(suffix)
        learnt = skeleton.field is not None
        for i, event in enumerate(events):
            raw = event.raw
            # This runs for every event of every stream: as few steps as can tell that it fits.
            if learnt and len(raw) >= around and raw.startswith(prefix) and raw.endswith(suffix):
                text = raw[start:end]
                if b'"' not in text:
                    texts.append(text)
                    continue
            if texts:
                out.extend(self._passed(events[i - len(texts) : i], texts))
                texts = []
            out.append(self._feed_event(event))
            learnt = skeleton.field is not None
            prefix, suffix = skeleton.prefix, skeleton.suffix
            start, end, around = len(prefix), -len(suffix), len(prefix) + len(suffix)
        if not texts:
            return out
        if not out:  # the usual read: every event fits
            return self._passed(events, texts)
        out.extend(self._passed(events[len(events) - len(texts) :], texts))
        return out

    def _passed(self, run: Sequence[Event], texts: list[bytes]) -> Sequence[Event]:
        """Events that fit the skeleton (`texts`, their texts): as they came when nothing is held and no
        needle completes in their text, else each through `_feed_event`."""
        field = self._skeleton.field
        assert field is not None
        state = self._state(*field)
        if not state.held and not state.tail:
            text = decode(texts)
            if (
                text is not None
                and self._first_needle(state.context, text) is None
                and not self.scrubber.holds_literal(text)
            ):
                state.context = (state.context + text)[-_CONTEXT:]
                return run
        return [self._feed_event(event) for event in run]

    def _feed_event(self, event: Event) -> Event:
        clean = not self.scrubber.may_hold_secret(event.raw, split=False)  # outside its text too
        obj = event.data
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not isinstance(choices, list) or not choices:
            return event if clean else self._scrubbed(event)
        if self._template is None:
            self._template = {k: obj[k] for k in ("id", "object", "created", "model") if k in obj}
        changed = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            final = choice.get("finish_reason") is not None
            delta = choice.get("delta")
            holder: dict[str, Any] = delta if isinstance(delta, dict) else choice
            calls = holder.get("tool_calls")
            ends_text = final or bool(calls)  # text before a tool call is released before it
            for name in TEXT_FIELDS:
                text = holder.get(name)
                if not isinstance(text, str):
                    if not ends_text:
                        continue
                    state = self.choices.get((index, name))
                    if state is None or not state.held:
                        continue
                state = self._state(index, name)
                if ends_text and not final:  # a tool call begins: the text goes first, whole
                    released = self._feed(state, text or "", False) + self._force(state)
                    if state.tail:  # the rest of that candidate's token would open the arguments
                        state.tail = False
                        self._tails.add(index)
                else:
                    released = self._feed(state, text or "", ends_text)
                if released != text:
                    holder[name] = released
                    changed = True
                    if choice.get("logprobs"):  # its tokens would spell what was held back or masked
                        choice["logprobs"] = None
            if calls or (final and index in self.calls):
                if not isinstance(delta, dict):  # a finishing choice without a delta: where released calls go
                    holder = choice["delta"] = {}
                changed |= self._feed_calls(index, holder, calls, final)
        out = Event.of(obj) if changed else event
        if not clean:
            return self._scrubbed(out)
        if not changed and self._skeleton.unlearnt():
            self._skeleton.learn(event.raw, obj)
        return out

    def flush(self) -> list[Event]:
        """Whatever is still held, scrubbed, as one last event (when the stream ends)."""
        held = {key: c for key, c in self.choices.items() if c.held}
        if self._template is None or not (held or any(c.held for cs in self.calls.values() for c in cs.values())):
            self.choices.clear()
            self.calls.clear()
            return []
        out: dict[int, dict[str, Any]] = {}
        for (index, name), state in held.items():
            choice = out.setdefault(index, {"index": index, "finish_reason": None})
            target = choice if name == "text" else choice.setdefault("delta", {})
            target[name] = self._release(state, len(state.held))
        for index, calls in self.calls.items():
            pieces = [self._call_piece(position, state) for position, state in calls.items() if state.held]
            if pieces:
                choice = out.setdefault(index, {"index": index, "finish_reason": None})
                choice.setdefault("delta", {})["tool_calls"] = pieces
        self.choices.clear()
        self.calls.clear()
        self._tails.clear()
        if not out:
            return []
        return [Event.of({**self._template, "choices": list(out.values())})]

    def _scrubbed(self, event: Event) -> Event:
        # Other fields (refusals, names) per event; text and arguments split across events are handled above.
        raw, found = self.scrubber.scrub_bytes(event.raw, split=False)
        if not found:
            return event
        self.on_found(found)
        return Event(raw)

    def _state(self, index: int, name: str) -> _Choice:
        state = self.choices.get((index, name))
        if state is None:
            state = self.choices[(index, name)] = _Choice()
        return state

    def _feed_calls(self, index: int, holder: dict[str, Any], calls: Any, final: bool) -> bool:
        """A choice's tool-call arguments through their holders (`holder["tool_calls"]` rewritten when
        anything was held or released); True when it changed."""
        states = self.calls.setdefault(index, {})
        out: list[Any] = []
        changed = False
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                out.append(call)
                continue
            position = call.get("index", 0)
            if not isinstance(position, int):  # not a call the encoders could place either
                out.append(call)
                continue
            for other, state in states.items():  # a call begins: what the others held goes first
                if other != position and state.held:
                    out.append({"index": other, "function": {"arguments": self._force(state)}})
                    changed = True
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                call_state = states.get(position)
                if call_state is None:
                    call_state = states[position] = _Choice()
                    if index in self._tails:
                        self._tails.discard(index)
                        call_state.tail = True
                released = self._feed(call_state, arguments, final)
                if released != arguments:
                    function["arguments"] = released
                    changed = True
            out.append(call)
        if final:
            for position, state in states.items():
                if state.held:
                    out.append(self._call_piece(position, state))
                    changed = True
            del self.calls[index]
        if changed:
            holder["tool_calls"] = out
        return changed

    def _call_piece(self, position: Any, state: _Choice) -> dict[str, Any]:
        """A tool call delta with all that `state` held, released."""
        return {"index": position, "function": {"arguments": self._release(state, len(state.held))}}

    def _force(self, state: _Choice) -> str:
        """All that `state` holds, released now because something else must go first (another tool call
        of its choice, or the choice's first call after its text): what is resolved as usual; a token
        candidate still open (`ghp_A1b2…`, no end yet) is redacted whole, and the rest of its token is
        dropped as it comes, so a secret never leaves in two halves that pass one by one."""
        cut = self._resolved(state)
        released = self._release(state, cut) if cut else ""
        if state.held and all(c.lower() in _TOKEN_CHARSET for c in state.held):  # a token, not ended yet
            state.held = ""
            state.tail = True
            state.context = (state.context + REDACTED)[-_CONTEXT:]
            return released + REDACTED
        return released + self._release(state, len(state.held))

    def _feed(self, state: _Choice, text: str, final: bool) -> str:
        if state.tail:
            rest = next((i for i, c in enumerate(text) if c.lower() not in _TOKEN_CHARSET), len(text))
            text = text[rest:]
            if not text and not final:
                return ""
            state.tail = False
        if not state.held:
            start = self._first_needle(state.context, text)
            if start is None and not final:  # the common case: nothing to hold
                state.context = (state.context + text)[-_CONTEXT:]
                return text
            start = len(text) if start is None else start
            passed, state.held = text[:start], text[start:]
            state.context = (state.context + passed)[-_CONTEXT:]
            if not state.held:
                return passed
        else:
            passed = ""
            state.held += text
        cut = len(state.held) if final else self._resolved(state)
        return passed + (self._release(state, cut) if cut else "")

    def _first_needle(self, context: str, text: str) -> int | None:
        """Where in `text` the first needle that completes in it starts (0 when it began in `context`)."""
        if context.isascii():  # a needle ending in `text` began at most its length before it
            context = context[-_NEEDLE_REACH:]
        low, origin = _lowered(context + text)
        offset = len(context)
        starts = []
        for end, needle in self.scrubber.needles_in(low):
            position = origin[end] if origin is not None else end
            if position >= offset:
                begin = end - len(needle) + 1
                begin = origin[begin] if origin is not None else begin
                starts.append(max(0, begin - offset))
        return min(starts) if starts else None

    def _release(self, state: _Choice, cut: int) -> str:
        """The first `cut` held characters, with what belongs to a secret (matched with the context
        before it) redacted; they become context."""
        text, state.held = state.held[:cut], state.held[cut:]
        whole = state.context + text
        spans, found = self.scrubber.spans(whole)
        offset = len(state.context)
        out, position = [], offset
        for start, end in spans:
            if end <= offset:
                continue
            start = max(start, offset)
            if start > position:
                out.append(whole[position:start])
            if not out or out[-1] != REDACTED:
                out.append(REDACTED)
            position = max(position, end)
        out.append(whole[position:])
        released = "".join(out)
        if found:
            self.on_found(found)
        state.context = (state.context + released)[-_CONTEXT:]
        return released

    def _resolved(self, state: _Choice) -> int:
        """How much of the held text can be released: up to the first candidate still open."""
        ctx = state.context + state.held
        low, origin = _lowered(ctx)
        spans = [self._candidate(low, end - len(needle) + 1, needle) for end, needle in self.scrubber.needles_in(low)]
        cut = len(low)
        for start, end in spans:
            if end is None:
                cut = min(cut, start)
        changed = True
        while changed:  # never cut through a resolved candidate
            changed = False
            for start, end in spans:
                if end is not None and start < cut < end:
                    cut, changed = start, True
        if origin is not None:
            cut = origin[cut] if cut < len(origin) else len(ctx)
        return max(0, cut - len(state.context))

    @staticmethod
    def _candidate(low: str, start: int, needle: str) -> tuple[int, int | None]:
        """(start, end) of what a needle at `start` may be part of; end None while it may still grow."""
        kind = _NEEDLE_KIND[needle]
        after = start + len(needle)
        if kind == "private_key":
            start = max(0, low.rfind("-----begin", 0, start))
            marker = low.find("-----end", after)
            if marker >= 0:
                close = low.find("-----", marker + 8)
                return start, (close + 5 if close >= 0 else None)
            return start, (len(low) if len(low) - start > _BLOCK_CHARS else None)
        if kind in TOKEN_KINDS:
            for i in range(after, min(len(low), after + _TOKEN_CHARS)):
                if low[i] not in _TOKEN_CHARSET:
                    return start, i
            return start, (len(low) if len(low) - after >= _TOKEN_CHARS else None)
        while start > 0 and not low[start - 1].isspace():  # `postgres://`, `my_password=`: the whole word
            start -= 1
        words = low[after : after + _PROSE_CHARS].split()
        if len(words) > _PROSE_WORDS or len(low) - after >= _PROSE_CHARS:
            return start, min(len(low), after + _PROSE_CHARS)
        return start, None
