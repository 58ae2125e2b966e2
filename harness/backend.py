"""The plugin contract: a backend turns (base model, training data, options) into a ModelHandle.

A backend class has:
  name        registry key (equal to its file name)
  Options     pydantic model, extra="forbid", a description on every field
  needs_cuda  False for all four built-ins (bitsandbytes 0.50 runs 4-bit on CPU)
  trains      optional, default True; False for prompt-only backends (the model is the base model)
  __init__(options: Options)
  train(model: ModelSpec, data: TrainData, workdir: Path) -> ModelHandle

Guarantees a backend gives: base weights on disk are never modified; everything it writes stays
under `workdir`; expected failures raise BackendError (harness.errors) with a hint; non-finite or
collapsed training raises TrainingDiverged so the arm stops and the other arms go on.
Heavy libraries are imported inside train(), so validation and --help stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class ModelSpec:
    """A resolved base model: where its weights are and how to run it."""

    ref: str            # what the suite said (builtin:..., HF id, local path)
    path: str           # local directory or HF id that from_pretrained accepts
    train_dtype: str    # "bfloat16" (autocast, fp32 master weights) or "float32"
    trust_remote_code: bool = False   # the suite's trust_remote_code: lets transformers run the model's code


@dataclass(frozen=True)
class Example:
    """One formatted row: the user message, the expected answer, and its label if classification."""

    id: str
    prompt: str
    target: str
    label: str | None = None


@dataclass(frozen=True)
class TaskFormat:
    """What every stage needs to render prompts the same way."""

    kind: str
    system: str | None
    labels: tuple[str, ...] | None
    max_new_tokens: int | None
    stop: tuple[str, ...]


@dataclass(frozen=True)
class TrainData:
    examples: tuple[Example, ...]
    task: TaskFormat
    seed: int


@dataclass
class TrainStats:
    seconds: float = 0.0
    cpu_seconds: float = 0.0        # CPU time (user + system, every thread; summed over ranks) of training
    tokens: int = 0                 # tokens processed by forward/backward (prompt + target, no padding)
    target_tokens: int = 0          # tokens that carried the loss
    computed_tokens: int = 0        # tokens the forwards ran: fewer than `tokens` where rows' shared prefix ran once
    steps: int = 0
    peak_memory_bytes: int = 0      # peak resident memory of the arm's process (CPU) or GPU peak
    trainable_params: int = 0
    total_params: int = 0
    artifact_bytes: int = 0
    skipped_examples: int = 0       # training examples longer than max_length, left out
    notes: list[str] = field(default_factory=list)   # what the backend had to adapt (e.g. after OOM)
    reopened: bool = False          # this run reopened a model trained by an earlier run (same inputs)
    loss_curve: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class ModelHandle:
    model: Any                      # torch module in eval mode
    tokenizer: Any
    context: tuple[Example, ...] = ()   # few-shot exemplars placed before every prompt
    artifact_path: str | None = None    # adapter dir or full weights; None for prompt arms
    stats: TrainStats = field(default_factory=TrainStats)


class Backend(Protocol):
    name: ClassVar[str]
    Options: ClassVar[type]
    needs_cuda: ClassVar[bool]

    def train(self, model: ModelSpec, data: TrainData, workdir: Path) -> ModelHandle: ...
