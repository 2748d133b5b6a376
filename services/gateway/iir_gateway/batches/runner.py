"""Runs batches: every gateway process looks for active batches and takes the lease of one at a time;
the holder runs its lines through the same pipeline as a request (the owner's key, limits, scrubbing,
usage), at the lowest priority so interactive traffic goes first, and writes each line's result once.
Each line runs as the owner's key is now, not as it was when the batch was made (keys/owners.py, cached
and dropped on key events): a revoked, blocked or expired key stops the batch (`failed`, the reason in
`errors`, the remaining lines not sent); a restricted or budget-cut key's lines get the errors a request
of that key would get.
A process that dies mid-batch loses its lease; another takes the batch over and runs only the lines
without a result, so the output has every line exactly once. At the end the output and error files are
written in the input's order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from typing import Any

import orjson

from iir_gateway.accounting.storage_quota import scopes_of
from iir_gateway.batches.files import FileStore
from iir_gateway.batches.store import FINAL, QUOTA_TTL_S, BatchStore
from iir_gateway.cancelling import cancel_all, current_task_cancelling
from iir_gateway.errors import APIError
from iir_gateway.inbound.routes import batch_endpoints
from iir_gateway.keys.owners import OwnerLookup, OwnerRefused
from iir_gateway.pipeline.entry import run_request
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.pipeline.rate_limit_waits import RateLimitWaits, Sleep
from iir_gateway.principal import Principal
from iir_gateway.request_ids import valid_request_id

log = logging.getLogger(__name__)

_ENDPOINTS = batch_endpoints()  # path → inbound protocol, from the one route table
AUTH_WAIT_S = (1.0, 5.0)  # while auth cannot say whether the key may go on: first and longest pause
CUSTOM_ID_RULE = "1 to 128 ASCII letters, digits, '_', '-', '.' or ':'"


def parse_lines(content: bytes, endpoint: str) -> list[tuple[str, dict[str, Any] | None, str]]:
    """(custom_id, body or None, why not) for each non-empty line of a batch input file."""
    out: list[tuple[str, dict[str, Any] | None, str]] = []
    for number, raw in enumerate(content.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            out.append((f"line-{number}", None, f"Line {number} is not valid JSON."))
            continue
        if not isinstance(line, dict):
            out.append((f"line-{number}", None, f"Line {number} is not a JSON object."))
            continue
        given = line.get("custom_id")
        # It names the line upstream too (X-Request-ID): held to a client's request-id rule.
        custom_id = given if isinstance(given, str) and valid_request_id(given) else f"line-{number}"
        if not given:
            out.append((custom_id, None, f"Line {number} has no custom_id."))
        elif custom_id != given:
            out.append((custom_id, None, f"Line {number}: custom_id must be a string of {CUSTOM_ID_RULE}."))
        elif line.get("method", "POST") != "POST":
            out.append((custom_id, None, f"Line {number}: method must be POST."))
        elif line.get("url") != endpoint:
            out.append((custom_id, None, f"Line {number}: url must be the batch's endpoint, {endpoint}."))
        elif not isinstance(line.get("body"), dict):
            out.append((custom_id, None, f"Line {number}: body must be a JSON object."))
        else:
            out.append((custom_id, line["body"], ""))
    return out


class BatchRunner:
    def __init__(
        self,
        pipeline: Pipeline,
        batches: BatchStore,
        files: FileStore,
        owners: OwnerLookup,
        concurrency: int,
        lease_s: float = 30.0,
        poll_s: float = 1.0,
        sleep: Sleep = asyncio.sleep,  # a rate-limited line's waits
    ) -> None:
        self.pipeline, self.batches, self.files, self.owners = pipeline, batches, files, owners
        self.concurrency = max(1, concurrency)
        self.lease_s, self.poll_s = lease_s, poll_s
        self.sleep = sleep
        self.holder = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="batch-runner")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_all([self._task])

    async def _loop(self) -> None:
        while True:
            try:
                active: Any = await self.batches.redis.smembers(self.batches.active)
                for raw in active:
                    batch_id = raw.decode()
                    if await self.batches.lease(batch_id, self.holder, self.lease_s):
                        await self._hold(batch_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: try again later, never die
                if current_task_cancelling():  # a stop that a library turned into another error
                    raise asyncio.CancelledError from exc
                log.warning("batch runner failed", extra={"error": repr(exc)[:200]})
            await asyncio.sleep(self.poll_s)

    async def _hold(self, batch_id: str) -> None:
        """Runs the batch while renewing its lease."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.lease_s / 3)
                await self.batches.lease(batch_id, self.holder, self.lease_s)

        renewer = asyncio.create_task(renew())
        try:
            await self.run(batch_id)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewer
            await self.batches.release(batch_id)

    async def run(self, batch_id: str) -> None:
        record = await self.batches.record(batch_id)
        if record is None:
            await self.batches.done(batch_id)
            return
        batch, made_by = record["batch"], Principal.from_dict(record["principal"])
        if batch["status"] in FINAL:  # finished by a process that died before the end of `_finish`
            await self._drop_results(batch_id, made_by)
            await self.batches.done(batch_id)
            return
        content = await self.files.content(batch["input_file_id"], made_by)
        if content is None:
            await self._fail(batch_id, "input_file_missing", "The input file no longer exists.")
            return
        lines = parse_lines(content, batch["endpoint"])
        if batch["status"] == "validating":
            started = {
                "status": "in_progress",
                "in_progress_at": int(time.time()),
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            }
            # Not over a cancel that came meanwhile.
            batch = (
                await self.batches.change(batch_id, lambda b: started if b["status"] == "validating" else None) or batch
            )
        if batch["status"] == "cancelling":  # cancelled before it ran
            await self._finish(batch_id, made_by, lines, "cancelled")
            return
        done = await self.batches.result_indexes(batch_id)
        queue = [i for i in range(len(lines)) if i not in done]
        stopping = asyncio.Event()
        refused: list[OwnerRefused] = []

        async def work() -> None:
            pause = AUTH_WAIT_S[0]
            while queue and not stopping.is_set():
                index = queue.pop(0)
                custom_id, body, problem = lines[index]
                try:
                    result = await self._line(batch_id, batch["endpoint"], made_by, custom_id, body, problem)
                except OwnerRefused as exc:  # the key may no longer spend: no line more is sent
                    refused.append(exc)
                    stopping.set()
                    return
                except APIError:  # auth cannot answer: the line waits (a cancel or the expiry still ends it)
                    queue.insert(0, index)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, AUTH_WAIT_S[1])
                else:
                    pause = AUTH_WAIT_S[0]
                    held = await self.batches.add_result(batch_id, index, result, _succeeded(result))
                    await self._count_results(batch_id, made_by, held)
                current = await self.batches.record(batch_id)
                now = time.time()
                if current is None or current["batch"]["status"] == "cancelling" or now > batch["expires_at"]:
                    stopping.set()

        await asyncio.gather(*(work() for _ in range(self.concurrency)))
        if refused:
            left = len(lines) - len(await self.batches.result_indexes(batch_id))
            message = f"The batch was stopped: {refused[0].why}; {left} of {len(lines)} requests were not sent."
            error = {"code": refused[0].code, "message": message, "param": None, "line": None}
            log.warning("batch stopped: its key was refused", extra={"batch_id": batch_id, "reason": refused[0].reason})
            await self._finish(batch_id, made_by, lines, "failed", errors={"object": "list", "data": [error]})
            return
        current = await self.batches.record(batch_id)
        status = current["batch"]["status"] if current else "cancelled"
        final = (
            "cancelled" if status == "cancelling" else "expired" if time.time() > batch["expires_at"] else "completed"
        )
        await self._finish(batch_id, made_by, lines, final)

    async def _line(
        self,
        batch_id: str,
        endpoint: str,
        made_by: Principal,
        custom_id: str,
        body: dict[str, Any] | None,
        problem: str,
    ) -> dict[str, Any]:
        """The line's result, run as its owner's key is now. OwnerRefused when the key may no longer
        run it; APIError (503) when auth cannot say."""
        line_id = f"batch_req_{uuid.uuid4().hex}"
        if body is None:
            return {
                "id": line_id,
                "custom_id": custom_id,
                "response": None,
                "error": {"code": "invalid_request", "message": problem},
            }
        protocol = _ENDPOINTS[endpoint]
        request_id = f"{batch_id}-{custom_id}"[:128]
        waits = RateLimitWaits(self.sleep)  # a rate-limited line waits; a used-up budget fails it
        while True:
            # Asked again after every wait: a change while the line waited for its limits counts.
            principal = await self.owners.current(made_by, priority=0)  # interactive traffic first
            try:
                exchange = protocol.exchange({})  # a line has no headers of its own
                sent = exchange.request({**body, "stream": False})
                answer = await run_request(
                    self.pipeline,
                    protocol.operation,
                    protocol.schema,
                    body=sent,
                    principal=principal,
                    request_id=request_id,
                )
                assert answer is not None and answer.document is not None  # unwatched, and not streamed
                result = schema_nulls_dropped(orjson.loads(await exchange.document(answer)))
                response = {"status_code": 200, "request_id": request_id, "body": result}
                return {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
            except APIError as exc:
                if await waits.after(exc):
                    continue
                error = exc.error_object()
                response = {"status_code": exc.status, "request_id": request_id, "body": {"error": error}}
                return {"id": line_id, "custom_id": custom_id, "response": response, "error": None}

    async def _count_results(self, batch_id: str, made_by: Principal, held: int) -> None:
        """Counts the results kept so far (`held` bytes) with the batch, in its key's, team's and the global
        storage (never refused: the tokens are paid)."""
        quota = self.files.quota
        if quota is not None and held >= 0:
            await quota.reserve("batches", scopes_of(made_by), batch_id, held, QUOTA_TTL_S, enforce=False)

    async def _drop_results(self, batch_id: str, made_by: Principal) -> None:
        """The lines' results are in the output and error files: deleted, and no longer counted (the batch
        has ended, so it is no longer one of the key's unfinished batches either)."""
        await self.batches.drop_results(batch_id)
        if self.files.quota is not None:
            await self.files.quota.release("batches", scopes_of(made_by), batch_id)

    async def _finish(
        self, batch_id: str, made_by: Principal, lines: list[Any], status: str, errors: dict[str, Any] | None = None
    ) -> None:
        """Writes the output and error files from the lines' results, in the input's order, in pieces (one
        result in memory at a time, and what the file store buffers), then ends the batch."""
        await self.batches.update(batch_id, status="finalizing", finalizing_at=int(time.time()))
        ok, failed = self.files.output(made_by), self.files.output(made_by)
        unwritten = [ok, failed]
        counted = completed = 0
        try:
            async for _, raw in self.batches.results_in_order(batch_id, len(lines)):
                succeeded = _succeeded(orjson.loads(raw))
                counted += 1
                completed += succeeded
                await (ok if succeeded else failed).write(raw + b"\n")
            fields: dict[str, Any] = {
                "status": status,
                f"{status}_at": int(time.time()),
                "request_counts": {"total": len(lines), "completed": completed, "failed": counted - completed},
            }
            if errors is not None:
                fields["errors"] = errors
            for file, field, name in ((ok, "output_file_id", "output"), (failed, "error_file_id", "error")):
                if file.size:
                    fields[field] = (await file.commit(f"{batch_id}_{name}.jsonl", "batch_output"))["id"]
                unwritten.remove(file)
        except BaseException:
            for file in unwritten:  # a takeover writes them again
                with contextlib.suppress(Exception):
                    await file.abort()
            raise
        await self.batches.update(batch_id, **fields)
        await self._drop_results(batch_id, made_by)
        await self.batches.done(batch_id)
        log.info("batch finished", extra={"batch_id": batch_id, "status": status, "lines": len(lines)})

    async def _fail(self, batch_id: str, code: str, message: str) -> None:
        errors = {"object": "list", "data": [{"code": code, "message": message, "param": None, "line": None}]}
        await self.batches.update(batch_id, status="failed", failed_at=int(time.time()), errors=errors)
        await self.batches.done(batch_id)


# Fields OpenAI's schema has as optional but not nullable, which vLLM writes as null.
_MESSAGE_NULLS = ("annotations", "function_call", "audio")
_USAGE_NULLS = ("prompt_tokens_details", "completion_tokens_details")


def schema_nulls_dropped(body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion (or any answer) with the nulls OpenAI's schema does not allow left out: an
    output line is read against that schema, not vLLM's."""
    for choice in body.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            for name in _MESSAGE_NULLS:
                if name in message and message[name] is None:
                    del message[name]
    usage = body.get("usage")
    if isinstance(usage, dict):
        for name in _USAGE_NULLS:
            if name in usage and usage[name] is None:
                del usage[name]
    if "system_fingerprint" in body and body["system_fingerprint"] is None:
        del body["system_fingerprint"]
    return body


def _succeeded(line: dict[str, Any]) -> bool:
    return line["error"] is None and line["response"]["status_code"] == 200
