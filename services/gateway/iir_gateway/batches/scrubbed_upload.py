"""An upload's bytes scrubbed line by line on their way to the file store: what a batch file keeps for
its 30 days is what would be sent (each line redacted as the request it holds, or the upload refused
in block mode), as the key's scrubbing mode says. Only the unfinished last line is held: at most the
upload's line cap (`receive_upload` refuses a longer line before it gets here)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from iir_gateway.scrubbing.policy import Scrubbing, line_breaks

# Lines of more bytes than this are scrubbed in a thread, one such piece at a time in the process: parsing
# and walking a 4 MB line of tiny JSON values takes about a second (the loop keeps answering meanwhile)
# and a hundred MB or more (not several at once).
_THREAD_BYTES = 1 << 20
_BIG = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scrub-upload")


class ScrubbedLines:
    def __init__(self, scrubbing: Scrubbing, mode: str, sink: Callable[[bytes], Awaitable[None]]) -> None:
        self.scrubbing, self.mode, self.sink = scrubbing, mode, sink
        self.found: set[str] = set()
        self._partial = bytearray()  # the line not ended yet
        self._line = 1  # the number of the first line not yet passed on

    async def write(self, piece: bytes) -> None:
        if self.mode == "off":
            await self.sink(piece)
            return
        # A line ends at LF, CRLF or a bare CR, as the batch runner reads them (a file of CR-ended lines
        # is not held whole).
        end = max(piece.rfind(b"\n"), piece.rfind(b"\r")) + 1
        if not end:
            self._partial += piece
            return
        whole = bytes(self._partial) + piece[:end] if self._partial else piece[:end]
        self._partial = bytearray(piece[end:])
        await self._pass(whole)

    async def close(self) -> None:
        """Passes on the last line (a file need not end with a newline)."""
        if self._partial:
            whole, self._partial = bytes(self._partial), bytearray()
            await self._pass(whole)

    async def _pass(self, lines: bytes) -> None:
        if len(lines) <= _THREAD_BYTES:
            scrubbed, found = self.scrubbing.jsonl(lines, self.mode, self._line)
        else:
            loop = asyncio.get_running_loop()
            scrubbed, found = await loop.run_in_executor(_BIG, self.scrubbing.jsonl, lines, self.mode, self._line)
        self.found |= found
        self._line += line_breaks(lines)
        await self.sink(scrubbed)
