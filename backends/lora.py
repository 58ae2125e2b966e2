"""LoRA: low-rank adapters on the frozen base model; only the adapters train."""

from __future__ import annotations

from pathlib import Path

from backends._options import LoraOptions
from harness.backend import ModelHandle, ModelSpec, TrainData


def lora_config(options: LoraOptions):
    from peft import LoraConfig

    return LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout,
                      target_modules=options.target_modules, task_type="CAUSAL_LM", bias="none")


class LoraBackend:
    name = "lora"
    Options = LoraOptions
    needs_cuda = False

    def __init__(self, options: LoraOptions):
        self.options = options

    def train(self, model: ModelSpec, data: TrainData, workdir: Path) -> ModelHandle:
        from backends._sft import train_sft

        return train_sft(model, data, workdir, self.options, peft_config=lora_config(self.options))
