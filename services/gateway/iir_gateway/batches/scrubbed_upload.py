"""An upload's bytes scrubbed line by line on their way to the file store: what a batch file keeps for
its 30 days is what would be sent (each line redacted as the request it holds, or the upload refused
in block mode), as the key's scrubbing mode says. Only the unfinished last line is held."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from iir_gateway.scrubbing.policy import Scrubbing


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
        end = piece.rfind(b"\n") + 1
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
        scrubbed, found = self.scrubbing.jsonl(lines, self.mode, self._line)
        self.found |= found
        self._line += lines.count(b"\n")
        await self.sink(scrubbed)
