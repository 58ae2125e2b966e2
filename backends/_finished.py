"""A finished training, recorded in its work directory so that a later run reopens it.

When training ends, the artifact is saved atomically and then `trained.json` (the stats and the
artifact's name, with a checksum) is written atomically beside it; the checkpoints are no longer
needed and go. A later run of the same arm (the cache gives it the same directory because its
inputs hash the same) loads the artifact instead of training: it evaluates again on new test data
or decoding settings at the cost of a model load. A damaged record is a warning and a retrain.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from pathlib import Path

from harness.backend import ModelHandle, ModelSpec, TrainStats

FINISHED = "trained.json"


def record_finished(workdir: Path, artifact: Path, stats: TrainStats) -> None:
    from harness.cache import digest
    from harness.results import atomic_write_text

    payload = {"artifact": artifact.name, "stats": dataclasses.asdict(stats)}
    atomic_write_text(workdir / FINISHED, json.dumps({"sha256": digest(payload), "payload": payload}))
    shutil.rmtree(workdir / "trainer", ignore_errors=True)


def read_finished(workdir: Path) -> tuple[TrainStats, Path] | None:
    """The finished training's stats and artifact, or None; a damaged record is set aside."""
    from harness.cache import digest

    path = workdir / FINISHED
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        payload = stored["payload"]
        if stored.get("sha256") != digest(payload):
            raise ValueError("checksum mismatch")
        artifact = workdir / payload["artifact"]
        if not artifact.is_dir():
            raise ValueError(f"{artifact.name} is missing")
        raw = payload["stats"]
        stats = TrainStats(**{**raw, "loss_curve": [tuple(p) for p in raw["loss_curve"]]})
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
