"""Full fine-tuning: every weight trains (fp32 master weights)."""

from __future__ import annotations

from pathlib import Path

from backends._options import TrainOptions
from harness.backend import ModelHandle, ModelSpec, TrainData


class FullBackend:
    name = "full"
    Options = TrainOptions
    needs_cuda = False

    def __init__(self, options: TrainOptions):
        self.options = options

    def train(self, model: ModelSpec, data: TrainData, workdir: Path) -> ModelHandle:
        from backends._sft import train_sft

        return train_sft(model, data, workdir, self.options)
