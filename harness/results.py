"""The results.json schema (versioned), and atomic read/write.

results.json is the product: reports are pure views of it. Bump SCHEMA_VERSION on any change
that a reader must know about, and describe the change in the README (results.json section).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.errors import UsageError, redact

SCHEMA_VERSION = 3
RESULTS_FILE = "results.json"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricValue(Model):
    value: float = Field(description="The metric over the whole split.")
    n: int = Field(description="Number of examples it was computed on.")
    ci_low: float | None = Field(None, description="Lower end of the bootstrap confidence interval.")
    ci_high: float | None = Field(None, description="Upper end of the bootstrap confidence interval.")


class Comparison(Model):
    """A paired comparison of this arm with another arm (or the base model) on the same examples."""

    metric: str
    against: str = Field(description="The other arm's name, or 'base' for the untouched base model.")
    difference: float = Field(description="This arm's value minus the other's, in the metric's units.")
    ci_low: float
    ci_high: float
    p_value: float = Field(description="Two-sided p-value of 'no difference'.")
    test: Literal["mcnemar-exact", "paired-bootstrap"]
    n: int
    better: int | None = Field(None, description="0/1 metrics: examples only this arm gets right.")
    worse: int | None = Field(None, description="0/1 metrics: examples only the other gets right.")


class Changes(Model):
    """Examples this arm fixed or broke relative to another arm, by a 0/1 per-example score."""

    against: str
    metric: str
    fixed: list[str] = Field(description="Example ids right here and wrong in the other arm.")
    broke: list[str] = Field(description="Example ids wrong here and right in the other arm.")


class Forgetting(Model):
    """The largest significant drop of a general metric against the base model (None if none)."""

    metric: str | None = None
    drop: float = Field(0.0, description="Worsening in the metric's units (>0 is worse); 0 if none.")
    relative: bool = Field(False, description="True when drop is relative (perplexity), not absolute.")
    p_value: float | None = None


class Cost(Model):
    train_seconds: float = Field(description="Wall time of training (0 for prompt arms).")
    train_cpu_seconds: float = Field(0.0, description="CPU time of training (user + system, every thread, "
                                                      "summed over processes; 0 when not recorded). On a "
                                                      "CPU-only run the cheapest-arm rule compares it: unlike "
                                                      "wall time it does not grow with what else ran.")
    train_tokens: int = Field(description="Non-padding tokens run through training (all epochs).")
    train_target_tokens: int = Field(description="Tokens that carried the loss.")
    train_steps: int
    peak_memory_bytes: int = Field(description="Peak resident memory of the arm's process through "
                                               "loading and training (CPU), or peak GPU memory allocated.")
    trainable_params: int
    total_params: int
    artifact_bytes: int = Field(description="Size of the saved adapter or weights (0 for prompt arms).")
    eval_seconds: float = Field(description="Wall time of evaluating the test split.")
    eval_tokens: int = Field(description="Tokens run through the model during evaluation.")
    eval_truncated: int = Field(0, description="Test prompts cut to fit the model's context (eval.overlong).")
    train_skipped_examples: int = Field(0, description="Training examples over the backend's max_length, "
                                                       "left out of training.")
    general_eval_seconds: float = Field(0.0, description="Wall time of the general tasks (0 when the "
                                                         "arm's model is the base model: reused).")


class ArmResult(Model):
    backend: str
    options: dict
    trains: bool = Field(True, description="False for prompt-only arms (the model is the base model).")
    cached: bool = Field(False, description="Reused from the cache, training and evaluation: its cost is "
                                            "that of the original run.")
    train_cached: bool = Field(False, description="Its trained model was reused from the cache and evaluated "
                                                  "again (the test data or evaluation settings changed); the "
                                                  "training cost is that of the original run.")
    status: Literal["ok", "failed"]
    error: str | None = None
    exit_code: int | None = Field(None, description="Exit code class of the failure (README).")
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    comparisons: list[Comparison] = Field(default_factory=list, description=(
        "Every task metric vs zero-shot and vs the best prompt arm; the primary metric vs each other "
        "trained arm."))
    changes: Changes | None = None
    general: dict[str, MetricValue] = Field(default_factory=dict, description="General metrics, 'task/metric'.")
    forgetting: list[Comparison] = Field(default_factory=list, description="General metrics vs the base model.")
    forgetting_summary: Forgetting | None = None
    cost: Cost | None = None
    loss_curve: list[tuple[int, float]] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="What training had to adapt, e.g. a smaller "
                                                               "batch after running out of memory.")
    artifact: str | None = Field(None, description="Adapter or weights directory, relative to the run.")
    samples: str | None = Field(None, description="Per-example rows (JSONL), relative to the run.")
    general_samples: str | None = Field(None, description="Per-item rows of the general tasks (JSONL).")


class Decision(Model):
    verdict: Literal["GO", "NO-GO", "INCONCLUSIVE"]
    arm: str | None = Field(None, description="GO: the arm to fine-tune with.")
    prompt_arm: str | None = Field(None, description="The prompt-only arm to keep using (NO-GO) or beaten.")
    reasons: list[str] = Field(description="Each reason cites its numbers.")
    needed_test_examples: int | None = Field(None, description="INCONCLUSIVE: roughly how many test "
                                                               "examples would settle it.")
    policy: dict = Field(description="The decision policy applied (suite's decision: section).")


class GeneralTask(Model):
    kind: Literal["multiple_choice", "short_answer", "perplexity", "lm_eval"]
    source: str
    sha256: str | None
    examples: int


class General(Model):
    tasks: dict[str, GeneralTask]
    metrics: dict[str, dict] = Field(description="Per 'task/metric': higher_is_better and variant.")
    base: dict[str, MetricValue] = Field(default_factory=dict, description="The base model's scores.")
    base_samples: str | None = None


class DataFile(Model):
    source: str
    sha256: str | None = Field(description="Hash of the file's bytes (None for hf: sources).")
    examples: int


class Results(Model):
    schema_version: int = SCHEMA_VERSION
    harness_version: str
    created: str
    suite: dict = Field(description="name, path, sha256, task, metrics, seed of the suite.")
    model: dict = Field(description="ref, resolved path, train dtype.")
    data: dict[str, DataFile]
    metrics: dict[str, dict] = Field(description="Per metric: higher_is_better and the exact variant.")
    environment: dict
    stats: dict = Field(default_factory=dict, description="confidence, resamples, seed and methods.")
    general: General | None = None
    arms: dict[str, ArmResult] = Field(default_factory=dict)
    best_prompt_arm: str | None = Field(None, description="Prompt-only arm best on the primary metric.")
    decision: Decision | None = None


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(results: Results, out_dir: Path) -> Path:
    path = out_dir / RESULTS_FILE
    atomic_write_text(path, redact(results.model_dump_json(indent=2)) + "\n")
    return path


def write_samples(rows: list[dict], path: Path) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_results(run_dir: Path) -> Results:
    path = run_dir / RESULTS_FILE if run_dir.is_dir() else run_dir
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot read results ({exc})", "point at a run directory written by "
                                                                 "harness compare") from None
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UsageError(f"{path}: results schema version {version}, this harness reads {SCHEMA_VERSION}",
                         "re-render with the harness version that wrote it")
    return Results(**raw)
