"""QLoRA: LoRA adapters on a base model quantized to 4-bit NF4 with double quantization.

bitsandbytes 0.50 runs 4-bit on CPU as well as CUDA, so this backend does not need a GPU.
"""

from __future__ import annotations

from pathlib import Path

from backends._options import LoraOptions
from backends.lora import lora_config
from harness.backend import ModelHandle, ModelSpec, TrainData


class QLoraBackend:
    name = "qlora"
    Options = LoraOptions
    needs_cuda = False

    def __init__(self, options: LoraOptions):
        self.options = options

    def train(self, model: ModelSpec, data: TrainData, workdir: Path) -> ModelHandle:
        from backends._sft import train_sft

        return train_sft(model, data, workdir, self.options, peft_config=lora_config(self.options),
                         quantize_4bit=True)
