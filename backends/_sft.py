"""The one training call shared by full, lora and qlora (transformers' Trainer).

The three backends differ only in what they pass here (a peft_config, 4-bit loading, options).
Choices, measured on a 2-core CPU with SmolLM2-135M:
- rows are tokenized by harness.prompts exactly as evaluation renders them; the loss is on the
  target tokens only, the prompt is context;
- batches are left-padded and the output head runs only on the last positions, those that
  predict target tokens (`logits_to_keep`): the 49k-word head over every prompt position was a
  fifth of the step. TRL's SFTTrainer (1.16) scores every position on CPU and adds an entropy
  pass, which made full fine-tuning run at 63 tokens/s here against ~100 for this path;
- batches are grouped by length, so little of each batch is padding, and a batch that still
  holds rows of very different lengths runs them as separate forwards (backends/_length_groups.py);
- the tokens a batch's rows all open with (chat template, system prompt: 26 of the sentiment
  suite's 69) run once per batch, as one more row the others attend to, with the loss and
  gradients of the whole rows (backends/_shared_prefix.py): full fine-tuning went from 358-381 to
  458-464 tokens/s, LoRA from 439-520 to 558-631, QLoRA from 401-471 to 470-562 (alternated runs);
- full fine-tuning copies the weights out of the memory-mapped checkpoint before the optimizer
  writes them (harness.models.detach_from_checkpoint_file);
- gradient checkpointing is off unless asked (it costs 10-25% and memory is not short here);
- bf16 autocast with fp32 master weights only where the hardware has fast bf16 (see
  harness.models.preferred_train_dtype); pure bf16 weights barely move at small learning rates.
"""

from __future__ import annotations

import math
import os
import resource
import time
from pathlib import Path

from backends._checkpoints import checkpoint_callback, last_good_checkpoint
from backends._distributed import fsdp_arguments, full_state_dict, is_distributed, reduce_counts, training_note
from backends._finished import eval_handle, record_finished, reopen_finished
from backends._fused_lora import fused_lora_updates
from backends._guard import guard_callback
from backends._length_groups import length_grouped_trainer
from backends._shared_prefix import attend_with_shared_prefix, shares_prefixes
from harness.allocator import keep_freed_memory, objects_frozen
from harness.backend import ModelHandle, ModelSpec, TrainData, TrainStats
from harness.errors import BackendError, TrainingDiverged
from harness.evaluate import weights_in_bf16
from harness.models import unwrapped
from harness.progress import enabled as progress_enabled
from harness.prompts import encode_pair


def peak_memory_bytes() -> int:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def tokenize(tokenizer, data: TrainData, max_length: int):
    from datasets import Dataset

    rows = {"input_ids": [], "target_len": [], "length": []}
    too_long = 0
    for ex in data.examples:
        prompt, target = encode_pair(tokenizer, data.task, (), ex)
        if len(prompt) + len(target) > max_length:
            too_long += 1
            continue
        rows["input_ids"].append(prompt + target)
        rows["target_len"].append(len(target))
        rows["length"].append(len(prompt) + len(target))
    if not rows["input_ids"]:
        raise BackendError(f"all {too_long} training examples are longer than max_length={max_length}",
                           "raise the backend's max_length option")
    return Dataset.from_dict(rows), too_long


class TargetOnlyCollator:
    """Left-pads a batch so every row's target ends at the last column, and keeps only the last
    positions for the output head; labels are cut to the same window (the model shifts them)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features):
        import torch

        width = max(len(f["input_ids"]) for f in features)
        keep = max(f["target_len"] for f in features) + 1
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for row, f in enumerate(features):
            seq, n = f["input_ids"], f["target_len"]
            ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = 1
            labels[row, width - n:] = torch.tensor(seq[-n:])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                "labels": labels[:, -keep:], "logits_to_keep": keep}


def _count_tokens(model) -> dict:
    """Count the loss-carrying tokens and the non-padding positions of every training forward
    (exact, unlike counting batches handed out by the data loader, which reads one ahead). The
    positions are fewer than the batches' tokens where a shared prefix ran once per batch."""
    seen = {"tokens": 0, "positions": 0}

    def hook(module, args, kwargs):
        labels, mask = kwargs.get("labels"), kwargs.get("attention_mask")
        if labels is not None and module.training:
            seen["tokens"] += int((labels != -100).sum())
            seen["positions"] += int(mask.sum()) if mask is not None else kwargs["input_ids"].numel()

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def save_atomically(model, target: Path, state_dict=None) -> Path:
    """save_pretrained into a temporary directory, then rename: never a half-written artifact.
    A full disk becomes a clear error (exit 6) and leaves nothing behind. `state_dict`: the
    weights gathered from FSDP shards (None: the model's own)."""
    import errno
    import shutil

    from harness.errors import ResourceError

    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        extra = {} if state_dict is None else {"state_dict": state_dict}
        model.save_pretrained(partial, safe_serialization=True, **extra)
        if os.environ.get("HARNESS_FAULT") == "disk_full_on_save":    # test-only: the disk fills mid-save
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(partial))
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceError(f"disk full while saving {target}", "free space or point HARNESS_CACHE / --out "
                                                                   "at a bigger disk") from None
        raise
    return target


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def count_params(model) -> tuple[int, int]:
    if hasattr(model, "get_nb_trainable_parameters"):   # PEFT counts 4-bit packed weights correctly
        return model.get_nb_trainable_parameters()
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _checkpoint_steps(options, examples: int) -> int:
    steps = options.max_steps or math.ceil(
        math.ceil(examples / options.batch_size) / options.grad_accum * options.epochs)
    return options.checkpoint_every or max(1, math.ceil(steps / 4))


def _training_args(workdir: Path, options, data: TrainData, bf16: bool, examples: int):
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(workdir / "trainer"), num_train_epochs=options.epochs,
        max_steps=options.max_steps or -1, per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum, learning_rate=options.learning_rate,
        lr_scheduler_type="linear", warmup_steps=options.warmup_ratio, weight_decay=options.weight_decay,
        max_grad_norm=1.0, activation_checkpointing=options.gradient_checkpointing, bf16=bf16, fp16=False,
        use_cpu=not torch.cuda.is_available(), seed=data.seed, data_seed=data.seed,
        train_sampling_strategy="group_by_length", remove_unused_columns=False,
        logging_steps=1, logging_nan_inf_filter=False, report_to=[],
        save_strategy="steps", save_steps=_checkpoint_steps(options, examples), save_total_limit=2,
        disable_tqdm=not progress_enabled(), dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding", **fsdp_arguments(options))


def attention_for(model, training: bool) -> None:
    """Eager attention while training on a CPU, SDPA otherwise. Measured on 2 cores with
    SmolLM2-135M, 8 x 80 tokens: forward + backward 1.21 s eager vs 1.53-1.76 s SDPA, whose CPU
    backward kernel alone took 17% of the step. Evaluation stays on SDPA (7.2 s vs 8.4 s eager
    scoring the headline prompts)."""
    import torch

    if torch.cuda.is_available():
        return
    base = unwrapped(model)
    base.set_attn_implementation("eager" if training else "sdpa")


def adapter_input_cast(model, under_autocast: bool):
    """PEFT casts every adapter's input to the adapter's fp32 weight dtype. Under bf16 autocast
    that is two copies per adapted linear for nothing (autocast casts it straight back to bf16),
    so it is turned off there."""
    from contextlib import nullcontext

    from peft.helpers import disable_input_dtype_casting

    if not under_autocast or not hasattr(model, "peft_config"):
        return nullcontext()
    return disable_input_dtype_casting(model)


def _contiguous_head_input(model) -> None:
    """The head sees `hidden[:, -keep:]`, a strided view. With a bf16 weight and no autocast cast in
    between, torch.matmul cannot fold that view to one matrix product and instead expands the
    49k x 576 weight per row into a batched product: 0.9 s of a 1.6 s LoRA step on 2 cores. A
    contiguous copy of the few kept positions costs nothing."""
    model.get_output_embeddings().register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))


def _sparse_tied_embedding_gradient(model) -> None:
    """Full fine-tuning of a model whose input embedding is its output head (SmolLM2, Llama 3.2):
    the head's gradient is already a dense vocabulary x hidden matrix, and the embedding's own
    part touches only the batch's token rows. A dense embedding backward zero-fills a second
    vocabulary-sized matrix to add those rows: 146 ms of a 1.6 s step on 2 cores for SmolLM2's
    49k x 576. As a sparse gradient it is added in place into the head's dense one (the head's
    arrives first: it is the last layer), so the weight's .grad stays dense for the optimizer.
    Not under DDP/FSDP, whose gradient buckets expect dense gradients."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and embedding is not None and head.weight is embedding.weight
    if tied and not is_distributed() and embedding.weight.requires_grad and hasattr(embedding, "sparse"):
        embedding.sparse = True


def _prepare(model, peft_config, quantize_4bit: bool, options):
    from harness import models

    attention_for(model, training=True)
    _contiguous_head_input(model)
    if peft_config is None:
        _sparse_tied_embedding_gradient(model)
        models.detach_from_checkpoint_file(model)     # the optimizer writes every weight
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    with models.library_deprecations_quiet():
        if quantize_4bit:
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=options.gradient_checkpointing)
        return get_peft_model(model, peft_config)


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    text = str(exc)
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text))


def _halve_batch(options, workdir: Path, notes: list[str]):
    """Out of memory: the same examples per optimizer step in smaller micro-batches, from scratch
    (checkpoints taken at another batch size cannot be resumed)."""
    import gc
    import shutil

    from harness.errors import ResourceError

    if options.batch_size == 1:
        raise ResourceError("out of memory while training at batch size 1",
                            "use qlora, gradient_checkpointing: true, a smaller max_length, or more memory")
    smaller = options.model_copy(update={"batch_size": math.ceil(options.batch_size / 2),
                                         "grad_accum": options.grad_accum * 2})
    notes.append(f"out of memory at batch size {options.batch_size}: retried with {smaller.batch_size} x "
                 f"{smaller.grad_accum} accumulated")
    shutil.rmtree(workdir / "trainer", ignore_errors=True)
    gc.collect()
    return smaller


def train_sft(spec: ModelSpec, data: TrainData, workdir: Path, options, *, peft_config=None,
              quantize_4bit: bool = False) -> ModelHandle:
    finished = reopen_finished(spec, workdir, peft_config, quantize_4bit)
    if finished is not None:
        model, tokenizer, stats, artifact = finished
        return eval_handle(model, tokenizer, artifact, stats, peft_config, quantize_4bit)
    notes: list[str] = []
    while True:
        try:
            run = _train_once(spec, data, workdir, options, peft_config, quantize_4bit)
            break
        except Exception as exc:      # noqa: BLE001 - only out-of-memory is retried, the rest re-raised
            if not is_out_of_memory(exc):
                raise
            if is_distributed():    # one rank cannot change the batch alone: the others would wait forever
                from harness.errors import ResourceError

                raise ResourceError(f"out of memory in training process {os.environ.get('RANK', '?')} at batch "
                                    f"size {options.batch_size} per process",
                                    "lower batch_size (it is per process) or use fsdp, qlora or more memory") from None
            options = _halve_batch(options, workdir, notes)
    trainer, tokenizer, guard, seen, skipped, (seconds, cpu_seconds) = run
    if guard.reason:
        raise TrainingDiverged(f"training stopped: {guard.reason}", "lower the learning rate or check the data")
    model = trainer.model
    target_tokens, peak, cpu_seconds = reduce_counts(seen["tokens"], peak_memory_bytes(), cpu_seconds)
    notes += [n for n in [training_note(options, trainer)] if n]
    batch_tokens = int(trainer.state.num_input_tokens_seen)
    stats = TrainStats(seconds=seconds, cpu_seconds=round(cpu_seconds, 3), steps=trainer.state.global_step,
                       skipped_examples=skipped, notes=notes, tokens=batch_tokens, target_tokens=target_tokens,
                       computed_tokens=batch_tokens if is_distributed() else seen["positions"],
                       peak_memory_bytes=peak,
                       loss_curve=[(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h])
    stats.trainable_params, stats.total_params = count_params(model)
    state_dict = full_state_dict(trainer)        # FSDP: every rank takes part in gathering the weights
    if is_distributed() and not trainer.is_world_process_zero():
        # Only the main process writes the artifact and trained.json; the arm's own process
        # reopens them once every rank has exited (harness/distributed.py).
        return ModelHandle(model=None, tokenizer=tokenizer, stats=stats)
    artifact = save_atomically(model, workdir / ("adapter" if peft_config is not None else "model"), state_dict)
    stats.artifact_bytes = _dir_bytes(artifact)
    record_finished(workdir, artifact, stats)
    attention_for(model, training=False)
    if is_distributed():      # nobody evaluates this copy: skip merging the adapter
        return ModelHandle(model=None, tokenizer=tokenizer, artifact_path=str(artifact), stats=stats)
    return eval_handle(model, tokenizer, artifact, stats, peft_config, quantize_4bit)


def _counting_once(trainer_cls):
    """trainer_cls whose FLOP count (logged as total_flos) counts the parameters once: Trainer
    recounts them at every step by walking every module (4 ms a step for a LoRA-wrapped 135M
    model). Same formula as Trainer.floating_point_ops."""

    class CountOnce(trainer_cls):
        def floating_point_ops(self, inputs):
            ids = inputs.get(getattr(self.model, "main_input_name", "input_ids"))
            if ids is None or not hasattr(self.model, "num_parameters"):
                return super().floating_point_ops(inputs)
            if not hasattr(self, "_counted_parameters"):
                self._counted_parameters = self.model.num_parameters(exclude_embeddings=True)
            return 6 * ids.numel() * self._counted_parameters

    return CountOnce


def _train_once(spec, data, workdir, options, peft_config, quantize_4bit):
    from transformers import PrinterCallback, Trainer, set_seed

    from harness import models

    set_seed(data.seed)   # before the adapter exists: LoRA's A matrices are drawn at creation
    model, tokenizer = models.load(spec, quantize_4bit=quantize_4bit, compute_dtype=spec.train_dtype)
    model = _prepare(model, peft_config, quantize_4bit, options)
    dataset, skipped = tokenize(tokenizer, data, options.max_length)
    guard = guard_callback(model)
    seen = _count_tokens(model)
    args = _training_args(workdir, options, data, spec.train_dtype == "bfloat16", len(dataset))
    share_prefix = shares_prefixes(model, options.gradient_checkpointing, is_distributed())
    if share_prefix:
        attend_with_shared_prefix(model)
    trainer_cls = length_grouped_trainer(_counting_once(Trainer), split=not is_distributed(), share_prefix=share_prefix)
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset,
                          data_collator=TargetOnlyCollator(tokenizer.pad_token_id),
                          callbacks=[guard, checkpoint_callback()])
    trainer.remove_callback(PrinterCallback)   # it prints every log dict when bars are off
    resume = last_good_checkpoint(Path(args.output_dir)) if Path(args.output_dir).is_dir() else None
    start, cpu_start = time.perf_counter(), time.process_time()
    # Frozen weights (the base under LoRA / QLoRA) train as bf16 copies: autocast would otherwise
    # re-cast all of them on every forward, and the residual stream would run in fp32. Measured
    # on 2 cores, 8 x 71 tokens: LoRA 1.10 -> 1.05 s per step, QLoRA 1.33 -> 1.22 s. The fp32 base
    # comes back afterwards, so evaluation sees the same model as a reopened artifact.
    with keep_freed_memory(), objects_frozen(), weights_in_bf16(model, args.bf16, frozen_only=True), \
            adapter_input_cast(model, under_autocast=args.bf16), fused_lora_updates(model):
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return trainer, tokenizer, guard, seen, skipped, (time.perf_counter() - start, time.process_time() - cpu_start)
