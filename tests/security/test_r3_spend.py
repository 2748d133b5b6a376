"""Issue 29, spend: a record sent twice is stored and counted once (9); a cut stream from an upstream
that writes spaced JSON is billed (11); a gateway's unsent spend survives its crash (12)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import redis
import yaml

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_dev.stack import Stack
from tests.integration.test_providers import OPENAI_KEY, start_fake
from tests.waiting import eventually, wait_for


@pytest.fixture(scope="module")
def auth(stack: Stack) -> Iterator[auth_pb2_grpc.AuthServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.auth}") as channel:
        yield auth_pb2_grpc.AuthServiceStub(channel)


def new_key(auth: auth_pb2_grpc.AuthServiceStub, name: str) -> tuple[str, str]:
    """(secret, id) of a fresh key."""
    reply = auth.CreateKey(auth_pb2.CreateKeyRequest(name=name), timeout=10)
    return reply.key, reply.info.id


def spent(auth: auth_pb2_grpc.AuthServiceStub, key_id: str) -> auth_pb2.SpendGroup | None:
    groups = auth.QuerySpend(auth_pb2.QuerySpendRequest(group_by="key", key_id=key_id), timeout=10).groups
    return groups[0] if groups else None


def usage(auth: auth_pb2_grpc.AuthServiceStub, key_id: str) -> tuple[int, int, int]:
    """(requests, prompt tokens, completion tokens) in the key's usage counters."""
    rows = auth.GetUsage(auth_pb2.GetUsageRequest(key_id=key_id), timeout=10).records
    return (
        sum(r.requests for r in rows),
        sum(r.prompt_tokens for r in rows),
        sum(r.completion_tokens for r in rows),
    )


def records(key_id: str, n: int, tag: str) -> list[auth_pb2.SpendRecord]:
    now = int(time.time() * 1000)
    return [
        auth_pb2.SpendRecord(
            record_id=f"{tag}-{i}",
            at_ms=now + i,
            request_id="same-client-request-id",  # the client's: never what makes a record unique
            key_id=key_id,
            model="local/m",
            prompt_tokens=10,
            completion_tokens=5,
            cost=0.01,
            status=200,
        )
        for i in range(n)
    ]


def test_a_flush_batch_sent_twice_is_stored_and_counted_once(auth: auth_pb2_grpc.AuthServiceStub) -> None:
    """Finding 9: the gateway sends a batch again after DEADLINE_EXCEEDED, though auth stored it."""
    _, key_id = new_key(auth, "spend-twice")
    batch = records(key_id, 3, f"twice-{os.urandom(4).hex()}")
    first = auth.RecordSpend(auth_pb2.RecordSpendRequest(records=batch), timeout=10)
    again = auth.RecordSpend(auth_pb2.RecordSpendRequest(records=batch), timeout=10)
    assert (first.inserted, again.inserted) == (3, 0)
    group = spent(auth, key_id)
    assert group is not None and group.requests == 3 and group.completion_tokens == 15
    assert abs(group.cost - 0.03) < 1e-9
    assert usage(auth, key_id) == (3, 30, 15)  # the usage counters too, once


class HeldReplies:
    """A TCP proxy in front of the auth service whose replies can be held back: the call is served and
    committed, but its answer arrives after the caller's deadline (a slow network, a paused database
    answering late)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.hold = False
        self._held: list[tuple[asyncio.StreamWriter, bytes]] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, holdable: bool) -> None:
            while data := await src.read(65536):
                if holdable and self.hold:
                    self._held.append((dst, data))
                    continue
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(client_r, server_w, False), pipe(server_r, client_w, True), return_exceptions=True)

    def release(self) -> None:
        self.hold = False
        for dst, data in self._held:
            dst.write(data)
        self._held.clear()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()


async def test_a_flush_that_timed_out_after_the_commit_is_stored_once(
    stack: Stack, auth: auth_pb2_grpc.AuthServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 9 as it happened: auth stores the batch but its answer comes after the gateway's deadline
    (DEADLINE_EXCEEDED), and the gateway's recorder sends the batch again."""
    from iir_gateway.accounting import spend_recorder

    monkeypatch.setattr(spend_recorder, "_TIMEOUT_S", 1.0)
    _, key_id = new_key(auth, "spend-late-answer")
    proxy = HeldReplies(stack.ports.auth)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{await proxy.start()}")
    try:
        await channel.channel_ready()
        recorder = spend_recorder.SpendRecorder(channel)
        for record in records(key_id, 2, ""):
            record.record_id = ""  # the recorder gives each its id
            recorder.record(record)
        proxy.hold = True
        await recorder.flush()  # stored, but the answer is held past the deadline: kept to send again
        proxy.release()
        assert len(recorder._pending) == 2
        await eventually(lambda: spent(auth, key_id) is not None)  # it was stored
        await recorder.flush()  # the retry
        assert not recorder._pending
        group = spent(auth, key_id)
        assert group is not None and group.requests == 2 and group.completion_tokens == 10
        assert usage(auth, key_id) == (2, 20, 10)
    finally:
        await channel.close()
        await proxy.stop()


@pytest.fixture(scope="module")
def spaced_gateway(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_fake("openai_api", OPENAI_KEY)
    providers = Path(tmp_path_factory.mktemp("spaced")) / "providers.yaml"
    providers.write_text(
        yaml.safe_dump(
            {
                "providers": {
                    "openai": {
                        "base_url": f"{url}/v1",
                        "models": {"gpt-spaced": {"price": {"input": 1, "output": 100}}},
                    }
                }
            }
        )
    )
    yield stack.start_gateway_replica(
        "gateway-spaced", env={"IIR_PROVIDERS_FILE": str(providers), "OPENAI_API_KEY": OPENAI_KEY}
    )
    proc.terminate()
    proc.wait(10)


def test_a_cut_stream_of_spaced_json_is_billed(auth: auth_pb2_grpc.AuthServiceStub, spaced_gateway: str) -> None:
    """Finding 11: the relayed-token count matched `"content":"` only, so cutting a stream from a server
    that writes `"content": "w"` was free."""
    secret, key_id = new_key(auth, "spaced-cut")
    prompt = " ".join(f"w{i}" for i in range(400))  # echoed back a word per chunk, 10 ms apart
    body = {"model": "openai/gpt-spaced", "messages": [{"role": "user", "content": prompt}], "stream": True}
    relayed = 0
    with httpx.stream(
        "POST",
        f"{spaced_gateway}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=20,
    ) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                relayed += 1
            if relayed == 20:
                break  # the client cuts the stream, long before its usage chunk
    group: auth_pb2.SpendGroup = wait_for(lambda: spent(auth, key_id), timeout=15, what="the cut stream's spend record")
    assert group.requests == 1
    assert 20 <= group.completion_tokens <= 404  # what was relayed (the gateway may have read ahead)
    assert group.cost > 0


def journal_size(r: redis.Redis, prefix: str) -> int:
    return sum(int(r.hlen(k)) for k in r.scan_iter(f"{prefix}spend:journal:*"))


def test_a_crashed_gateways_unsent_spend_is_billed_once(
    stack: Stack, auth: auth_pb2_grpc.AuthServiceStub, redis_url: str
) -> None:
    """Finding 12: a gateway SIGKILLed with records not yet sent (and a stream running) lost them."""
    secret, key_id = new_key(auth, "crash-spend")
    doomed = stack.start_gateway_replica(
        "gateway-doomed", env={"IIR_USAGE_FLUSH_INTERVAL_S": "3600", "IIR_SPEND_CHECKPOINT_S": "0.3"}
    )
    headers = {"Authorization": f"Bearer {secret}"}
    body = {"model": "local/llama-3-8b-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    for _ in range(4):
        assert httpx.post(f"{doomed}/v1/chat/completions", json=body, headers=headers, timeout=20).status_code == 200
    prefix = stack.env["IIR_REDIS_PREFIX"]
    r = redis.Redis.from_url(redis_url)
    stream_body = {"model": "local/slow", "messages": [{"role": "user", "content": "x"}], "stream": True}
    stream_body["max_tokens"] = 60  # 4 tokens a second: still running when the gateway dies
    got = 0
    with httpx.stream("POST", f"{doomed}/v1/chat/completions", json=stream_body, headers=headers, timeout=20) as resp:
        for line in resp.iter_lines():
            got += line.startswith("data: {") and '"content":"' in line.replace(" ", "")
            if got >= 3:
                break
        wait_for(lambda: journal_size(r, prefix) >= 5, timeout=10, what="the records and the stream's checkpoint")
        proc = stack.processes["gateway-doomed"].popen
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert spent(auth, key_id) is None  # nothing sent before the crash
    stack.start_gateway_replica("gateway-heir")
    group: auth_pb2.SpendGroup = wait_for(
        lambda: (g := spent(auth, key_id)) is not None and g.requests == 5 and g, timeout=40, what="5 records"
    )
    assert group.completion_tokens >= 4 * 1 + 3  # the stream's relayed tokens at its last checkpoint
    wait_for(lambda: journal_size(r, prefix) == 0, timeout=10, what="the journal emptied")
    again = spent(auth, key_id)
    assert again is not None and again.requests == 5  # once each
    assert usage(auth, key_id)[0] == 5
