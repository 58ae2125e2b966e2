"""Training throughput: harness's full / LoRA / QLoRA path vs TRL's SFTTrainer with its defaults.

Same model, same examples (the sentiment suite's train split, as prompt/completion
conversations for TRL), same batch size, steps and learning rate; everything else is each
tool's default (TRL: padding to the batch's longest row, gradient checkpointing on, bf16 on).
Tokens are the non-padding tokens each trainer reports it consumed; time is trainer.train only.
Harness runs the tokens all rows of a batch open with (chat template, system prompt) once per
batch (backends/_shared_prefix.py), with the loss and gradients of the whole rows: its FLOPs and
utilisation count every token, as TRL's do (the same work), and `fraction_of_bf16_peak_computed`
counts only the positions it ran.
TRL runs twice: as its users run it, and under the process settings harness applies to its own
training (glibc keeping freed memory), so that gain can be told apart from the rest.
"""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from pathlib import Path

from bench.common import Figure, harness_settings

# 6·N per token for full training; adapters skip the frozen weights' gradients: 4·N.
FLOPS_PER_PARAM = {"full": 6, "lora": 4, "qlora": 4}


def _options(kind: str, steps: int, batch: int):
    from backends._options import LoraOptions, TrainOptions

    common = {"max_steps": steps, "batch_size": batch, "checkpoint_every": 10 ** 6}
    if kind == "full":
        return TrainOptions(learning_rate=2e-5, **common)
    return LoraOptions(learning_rate=5e-4, r=8, alpha=16, **common)


def harness_train(kind: str, spec, data, steps: int, batch: int, params: int) -> Figure:
    from harness import registry

    backend_cls = registry.get(kind)
    with tempfile.TemporaryDirectory() as work:
        handle = backend_cls(_options(kind, steps, batch)).train(spec, data.train_data(), Path(work))
    stats = handle.stats
    return Figure(f"harness {kind}", stats.seconds, stats.tokens, FLOPS_PER_PARAM[kind] * params * stats.tokens,
                  computed_tokens=stats.computed_tokens)


def _trl_dataset(data):
    from datasets import Dataset

    system = [{"role": "system", "content": data.task.system}] if data.task.system else []
    return Dataset.from_list([{"prompt": system + [{"role": "user", "content": e.prompt}],
                               "completion": [{"role": "assistant", "content": e.target}]}
                              for e in data.train])


def trl_train(kind: str, spec, data, steps: int, batch: int, params: int, same_settings: bool = False) -> Figure:
    """same_settings: TRL runs under harness's process settings (bench.common.harness_settings)."""
    import time

    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from harness import models

    options = _options(kind, steps, batch)
    model, tokenizer = models.load(spec, quantize_4bit=kind == "qlora", compute_dtype="bfloat16")
    peft_config = None if kind == "full" else LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                          task_type="CAUSAL_LM")
    with tempfile.TemporaryDirectory() as work:
        config = SFTConfig(output_dir=work, max_steps=steps, per_device_train_batch_size=batch,
                           learning_rate=options.learning_rate, report_to=[], save_strategy="no",
                           disable_tqdm=True, seed=data.seed, include_num_input_tokens_seen="non_padding",
                           use_cpu=not torch.cuda.is_available())   # transformers refuses bf16 on CPU without it
        trainer = SFTTrainer(model=model, args=config, train_dataset=_trl_dataset(data),
                             processing_class=tokenizer, peft_config=peft_config)
        start = time.perf_counter()
        with harness_settings() if same_settings else nullcontext():
            trainer.train()
        seconds = time.perf_counter() - start
        tokens = int(trainer.state.num_input_tokens_seen)
    return Figure(f"TRL SFTTrainer {kind}" + (" (harness's settings)" if same_settings else ""), seconds, tokens, FLOPS_PER_PARAM[kind] * params * tokens)
