"""A finished training, recorded in its work directory so that a later run reopens it.

When training ends, the artifact is saved atomically and then `trained.json` (the stats and the
artifact's name, with a checksum) is written atomically beside it; the checkpoints are no longer
needed and go. A later run of the same arm (the cache gives it the same directory because its
inputs hash the same) loads the artifact instead of training: it evaluates again on new test data
or decoding settings at the cost of a model load. A damaged record is a warning and a retrain.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import warnings
from pathlib import Path

from harness.backend import ModelHandle, ModelSpec, TrainStats

FINISHED = "trained.json"


def record_finished(workdir: Path, artifact: Path, stats: TrainStats) -> None:
    from harness.cache import write_checked

    write_checked(workdir / FINISHED, {"artifact": artifact.name, "stats": dataclasses.asdict(stats)})
    shutil.rmtree(workdir / "trainer", ignore_errors=True)


def read_finished(workdir: Path) -> tuple[TrainStats, Path] | None:
    """The finished training's stats and artifact, or None; a damaged record is set aside."""
    from harness.cache import read_checked, train_stats_from

    path = workdir / FINISHED
    if not path.exists():
        return None
    try:
        payload = read_checked(path)
        artifact = workdir / payload["artifact"]
        if not artifact.is_dir():
            raise ValueError(f"{artifact.name} is missing")
        stats = train_stats_from(payload["stats"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"finished training in {workdir} is unreadable ({exc}); training again", stacklevel=2)
        path.rename(path.with_name(f"{FINISHED}.corrupt-{int(time.time())}"))
        return None
    return stats, artifact


def reopen_finished(spec: ModelSpec, workdir: Path, peft_config, quantize_4bit: bool):
    """(model, tokenizer, stats, artifact) of a training finished earlier in workdir, or None."""
    record = read_finished(workdir)
    if record is None:
        return None
    stats, artifact = record
    from harness import models

    if peft_config is None:
        model, tokenizer = models.load(spec, weights=str(artifact))
    else:
        from peft import PeftModel

        model, tokenizer = models.load(spec, quantize_4bit=quantize_4bit, compute_dtype=spec.train_dtype)
        with models.library_deprecations_quiet():
            model = PeftModel.from_pretrained(model, str(artifact), is_trainable=False, local_files_only=True)
    stats.reopened = True
    return model, tokenizer, stats, artifact


def eval_handle(model, tokenizer, artifact: Path, stats: TrainStats, peft_config, quantize_4bit: bool) -> ModelHandle:
    """The trained model ready for evaluation, the same whether just trained or reopened."""
    model.eval()
    if peft_config is not None and not quantize_4bit:
        from harness.candidate import merge_for_eval   # the gate evaluates adapters the same way

        model = merge_for_eval(model)
    return ModelHandle(model=model, tokenizer=tokenizer, artifact_path=str(artifact), stats=stats)
