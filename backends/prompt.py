"""Prompt-only arm: the untouched base model, with k exemplars from the train split in context.

With shots: 0 this is the zero-shot baseline, so the baseline takes the same path as every arm.
"""

from __future__ import annotations

import random
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from harness.backend import Example, ModelHandle, ModelSpec, TrainData, TrainStats
from harness.errors import BackendError


class PromptOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shots: int = Field(0, ge=0, le=64, description="Exemplars from the train split placed before each prompt.")


def choose_shots(examples: tuple[Example, ...], k: int, labels, seed: int) -> tuple[Example, ...]:
    """k exemplars drawn with the suite seed, balanced over labels when there are labels."""
    if k > len(examples):
        raise BackendError(f"shots={k} but the train split has only {len(examples)} examples",
                           "lower shots or add training examples")
    rng = random.Random(seed)
    if not labels:
        return tuple(rng.sample(list(examples), k))
    pools = {label: [e for e in examples if e.label == label] for label in labels}
    for pool in pools.values():
        rng.shuffle(pool)
    order = list(labels)
    rng.shuffle(order)
    chosen = []
    while len(chosen) < k:
        label = order[len(chosen) % len(order)]
        if not pools[label]:
            order.remove(label)
            continue
        chosen.append(pools[label].pop())
    rng.shuffle(chosen)
    return tuple(chosen)


class PromptBackend:
    name = "prompt"
    trains = False          # the model is the base model: its general scores are the base's
    Options = PromptOptions
    needs_cuda = False

    def __init__(self, options: PromptOptions):
        self.options = options

    def train(self, model: ModelSpec, data: TrainData, workdir: Path) -> ModelHandle:
        from backends._sft import count_params, peak_memory_bytes
        from harness import models

        shots = choose_shots(data.examples, self.options.shots, data.task.labels, data.seed)
        loaded, tokenizer = models.load(model)
        _, total = count_params(loaded)
        # Nothing trains: train seconds stay 0; the peak is the loaded model's footprint.
        stats = TrainStats(total_params=total, peak_memory_bytes=peak_memory_bytes())
        return ModelHandle(model=loaded, tokenizer=tokenizer, context=shots, stats=stats)
