"""Option models of the training backends (pydantic only, so validation imports nothing heavy)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: float = Field(1.0, gt=0, le=100, description="Passes over the train split.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: float = Field(2e-5, gt=0, lt=1, description="Peak learning rate (linear decay after warmup).")
    batch_size: int = Field(8, gt=0, le=1024, description="Examples per micro-batch per process (device).")
    grad_accum: int = Field(1, gt=0, le=1024, description="Micro-batches accumulated per optimizer step.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Fraction of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, lt=1, description="AdamW weight decay.")
    max_length: int = Field(1024, gt=8, description="Longest training sequence (prompt + target) in tokens.")
    gradient_checkpointing: bool = Field(False, description="Trade 10-25% speed for activation memory.")
    checkpoint_every: int | None = Field(None, gt=0, description="Save a resumable checkpoint every N steps "
                                                                 "(default: 4 per run).")
    processes: int = Field(1, ge=1, le=1024, description="Training processes on this machine, one per GPU (or CPU "
                                                         "share): torchrun + accelerate data parallelism. batch_size "
                                                         "is per process, so a step sees processes x batch_size "
                                                         "x grad_accum examples.")
    distributed: Literal["ddp", "fsdp"] = Field("ddp", description="With processes > 1: ddp (every process holds "
                                                                    "the whole model) or fsdp (weights, gradients "
                                                                    "and optimizer state sharded across processes).")


class LoraOptions(TrainOptions):
    learning_rate: float = Field(2e-4, gt=0, lt=1, description="Peak learning rate (linear decay after warmup).")
    r: int = Field(8, gt=0, le=1024, description="LoRA rank.")
    alpha: int = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear", description="Modules that get adapters: 'all-linear' or a list of module names.")
