"""The PyTorch side of bench/export.py, run in the bench-only venv of bench/embed.py (torch
and transformers never share an environment with TensorFlow):

    .venv-st/bin/pip install onnx   # torch.onnx.export needs it
    .venv-st/bin/python bench/torch_onnx_anchor.py CHECKPOINT OUT.onnx

Exports the checkpoint folder's BERT as Hugging Face transformers loads it (`BertModel`,
eager attention, pooler included) with `torch.onnx.export` (the TorchScript exporter, opset
17), int64 `input_ids`, `attention_mask`, `token_type_ids` with dynamic batch and sequence
axes -> `pooler_output`: what a PyTorch user ships to onnxruntime. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json

import torch
import transformers
from transformers import BertModel

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


class Pooled(torch.nn.Module):
    """Keyword arguments in (transformers 5's forward takes more positional ones)."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).pooler_output


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    args = parser.parse_args()
    model = Pooled(BertModel.from_pretrained(args.checkpoint, attn_implementation="eager")).eval()
    ids = torch.ones(2, 16, dtype=torch.int64)
    torch.onnx.export(model, (ids, ids, torch.zeros_like(ids)), args.out, input_names=INPUTS,
                      output_names=["pooler_output"], opset_version=17, dynamo=False,
                      dynamic_axes={name: {0: "batch", 1: "sequence"} for name in INPUTS})
    print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                      "exporter": "torch.onnx.export (TorchScript), opset 17",
                      "parameters": sum(p.numel() for p in model.parameters())}))


if __name__ == "__main__":
    main()
