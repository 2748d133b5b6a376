"""Reads a `/v1/files` upload as it arrives: the multipart body is parsed chunk by chunk, the file part goes
to a sink (Redis) as it comes, and its size and non-blank lines are counted on the way, so an upload over
a limit is refused at the chunk that crosses it. Memory stays about one chunk plus the sink's buffer,
whatever the file's size, and no step holds the event loop for more than one chunk."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

# Lines as `bytes.splitlines` cuts them (the runner's), so "\r" ends one too; other whitespace is dropped.
_CR_AS_LF = bytes.maketrans(b"\r", b"\n")
_SPACES = b" \t\x0b\x0c"
_NEWLINES = re.compile(rb"\n+")
_MAX_HEADER = 8192  # bytes of a part's headers
_MAX_FIELD = 1024  # bytes of a plain field (`purpose`)
_MAX_PARTS = 10


class UploadRefused(Exception):
    """The upload broke a rule: `status` and `code` for the client's error, `param` the part."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


class LineCounter:
    """Counts the lines of a stream fed in arbitrary pieces that are not blank: as many as
    `sum(1 for line in data.splitlines() if line.strip())` would; and notes the first line over `max_line_bytes`."""

    def __init__(self, max_line_bytes: int = 0) -> None:
        self.lines = 0
        self.breaks = 0  # line breaks, blank lines' included
        self.newlines = 0  # "\n" only: a line's number in messages is this + 1
        self.max_line_bytes = max_line_bytes  # 0: any length
        self.too_long = 0  # the number of the first line over `max_line_bytes` (its first bytes may do)
        self._open = False  # the unfinished last line has a non-blank byte (already counted)
        self._open_bytes = 0  # bytes of the unfinished last line

    def _measure(self, chunk: bytes) -> None:
        cap = self.max_line_bytes
        if self.too_long or not cap or self._open_bytes + len(chunk) <= cap:
            return  # no line of it can be over: a chunk is usually far smaller than the cap
        offset = self._open_bytes  # the first piece continues the unfinished line
        for number, line in enumerate(chunk.split(b"\n"), self.newlines + 1):
            for piece in line.split(b"\r"):  # "\r" ends a line too (the runner's splitlines)
                if offset + len(piece) > cap:
                    self.too_long = number
                    return
                offset = 0

    def feed(self, chunk: bytes) -> None:
        self._measure(chunk)
        last = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        self._open_bytes = len(chunk) - last - 1 if last >= 0 else self._open_bytes + len(chunk)
        newlines = chunk.count(b"\n")
        self.newlines += newlines
        self.breaks += newlines + chunk.count(b"\r")
        text = chunk.translate(_CR_AS_LF, _SPACES)
        if not text:
            return
        runs = _NEWLINES.sub(b"\n", text)  # blank lines are now empty: only "\n" runs separate lines
        segments = runs.count(b"\n") + 1 - runs.startswith(b"\n") - runs.endswith(b"\n")
        if self._open and not runs.startswith(b"\n"):
            segments -= 1  # the first segment continues a line counted already
        self.lines += max(0, segments)
        last = runs.rfind(b"\n")
        self._open = (last < len(runs) - 1) if last >= 0 else (self._open or bool(runs))


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Received:
    filename: str
    fields: dict[str, str]
    size: int
    lines: int
    has_file: bool


async def receive_upload(
    content_type: str,
    body: AsyncIterator[bytes],
    sink: Callable[[bytes], Awaitable[None]],
    max_bytes: int,
    max_lines: int,
    max_line_bytes: int,
) -> Received:
    """Parses multipart `body`, giving the `file` part's bytes to `sink` as they arrive; raises
    UploadRefused when the form is malformed, the file is over `max_bytes` or `max_lines`, or a line is
    over `max_line_bytes` (refused as soon as the unfinished line passes it: the sink never holds more)."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadRefused(400, "Send the file as multipart/form-data with `file` and `purpose`.", "invalid_value")
    parts: list[_Part] = []
    header_name, header_value = bytearray(), bytearray()
    file_pieces: list[bytes] = []
    state = {"in_file": False, "files": 0, "header_bytes": 0, "ended": 0}

    def bad(message: str, param: str | None = None) -> UploadRefused:
        return UploadRefused(400, message, "invalid_value", param)

    def on_part_begin() -> None:
        if len(parts) >= _MAX_PARTS:
            raise bad(f"A file upload has at most {_MAX_PARTS} parts.")
        parts.append(_Part())
        state["header_bytes"] = 0

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])
        state["header_bytes"] += end - start
        if state["header_bytes"] > _MAX_HEADER:
            raise bad("A part's headers are too long.")

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])
        state["header_bytes"] += end - start
        if state["header_bytes"] > _MAX_HEADER:
            raise bad("A part's headers are too long.")

    def on_header_end() -> None:
        parts[-1].headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        part = parts[-1]
        _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            part.filename = options[b"filename"].decode("utf-8", "replace")
        state["in_file"] = part.name == "file" and part.filename is not None
        if state["in_file"]:
            state["files"] += 1
            if state["files"] > 1:
                raise bad("Send one `file` part.", "file")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["in_file"]:
            file_pieces.append(data[start:end])
            return
        part = parts[-1]
        if part.filename is None:  # another file part is skipped; a plain field is kept, small
            part.data.extend(data[start:end])
            if len(part.data) > _MAX_FIELD:
                raise bad(f"The field `{part.name}` is too long.", part.name or None)

    def on_part_end() -> None:
        state["in_file"] = False

    def on_end() -> None:
        state["ended"] = 1

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    counter = LineCounter(max_line_bytes)
    size = 0
    async for chunk in body:
        try:
            parser.write(chunk)
        except FormParserError as exc:
            raise bad(f"Send the file as multipart/form-data with `file` and `purpose` ({exc}).") from None
        for piece in file_pieces:
            size += len(piece)
            if size > max_bytes:
                raise UploadRefused(413, f"A batch file may hold {max_bytes} bytes.", "file_too_large", "file")
            counter.feed(piece)
            if counter.too_long:  # a line is a request body: no larger than one sent directly
                raise bad(
                    f"Line {counter.too_long} of the file is longer than {max_line_bytes} bytes, "
                    "the largest request body.",
                    "file",
                )
            if counter.lines > max_lines:
                raise bad(f"A batch file may hold {max_lines} requests; this one has more.", "file")
            if counter.breaks > 4 * max_lines + 4:  # blank lines cost the runner too (it splits the file)
                raise bad(f"A batch file may hold {4 * max_lines} line breaks; this one has more.", "file")
            await sink(piece)
        file_pieces.clear()
    try:
        parser.finalize()
    except FormParserError as exc:
        raise bad(f"The multipart body ended early ({exc}).") from None
    if not state["ended"]:
        raise bad("The multipart body ended before its closing boundary.")
    upload = next((p for p in parts if p.name == "file" and p.filename is not None), None)
    fields = {p.name: p.data.decode("utf-8", "replace") for p in parts if p.filename is None and p.name}
    filename = (upload.filename or "batch.jsonl") if upload else ""
    return Received(filename, fields, size, counter.lines, upload is not None)
