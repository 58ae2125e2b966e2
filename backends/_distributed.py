"""What train_sft does differently when it runs as one of several processes (one rank).

harness/distributed.py launches the ranks with torchrun; inside each, transformers' Trainer builds
an accelerate Accelerator that reads torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR) and
wraps the model in DDP or FSDP, with gloo on CPU and nccl on CUDA. This file holds only what the
harness itself must add: counts summed over ranks, FSDP's full state dict gathered before the
main process saves, and a note in the arm's stats saying how it was trained.
"""

from __future__ import annotations

import os


def world_size() -> int:
    """Processes training this arm together (torchrun sets WORLD_SIZE; 1 when run alone)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_size() > 1


def fsdp_arguments(options) -> dict:
    """TrainingArguments that turn FSDP on, when asked for and there is more than one process.
    A full state dict, so the saved artifact is one ordinary model or adapter directory."""
    if not is_distributed() or getattr(options, "distributed", "ddp") != "fsdp":
        return {}
    return {"fsdp": True, "fsdp_config": {"state_dict_type": "FULL_STATE_DICT",
                                          "auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}}


def reduce_counts(target_tokens: int, peak_bytes: int, cpu_seconds: float) -> tuple[int, int, float]:
    """Target tokens and CPU time summed over ranks, peak memory the largest of any rank (each
    rank counted only its own share). A collective call: every rank must make it."""
    if not is_distributed():
        return target_tokens, peak_bytes, cpu_seconds
    import torch
    import torch.distributed as dist

    tokens = torch.tensor([target_tokens], dtype=torch.long)
    peak = torch.tensor([peak_bytes], dtype=torch.long)
    cpu = torch.tensor([cpu_seconds], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tokens, peak, cpu = tokens.cuda(), peak.cuda(), cpu.cuda()
    dist.all_reduce(tokens, op=dist.ReduceOp.SUM)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    dist.all_reduce(cpu, op=dist.ReduceOp.SUM)
    return int(tokens.item()), int(peak.item()), float(cpu.item())


def full_state_dict(trainer):
    """FSDP shards the weights: gather them (a collective call, every rank) so the main process
    can save whole tensors. None under DDP, where every rank already holds the whole model."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        return None
    return trainer.accelerator.get_state_dict(trainer.model)


def training_note(options, trainer) -> str | None:
    """How the arm was trained, for the arm's notes (results.json) when it took several processes."""
    if not is_distributed():
        return None
    backend = trainer.accelerator.state.backend if hasattr(trainer.accelerator.state, "backend") else "?"
    kind = "fsdp" if getattr(trainer, "is_fsdp_enabled", False) else "ddp"
    per_step = world_size() * options.batch_size * options.grad_accum
    return (f"trained in {world_size()} processes ({kind}, {backend}): batch_size {options.batch_size} per "
            f"process, {per_step} examples per optimizer step")
