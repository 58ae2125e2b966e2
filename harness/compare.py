"""The compare loop: every arm of the suite through train -> evaluate, then results on disk.

results.json is rewritten after each arm, so an interrupted run keeps every finished arm.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

from harness import __version__, registry
from harness.analysis import (annotate_task_comparisons, forgetting, general_values, general_with_scores,
                              metric_values, with_scores)
from harness.arm import ArmJob, ArmOutcome, run_arm_isolated, submit
from harness.cache import ArmCache, CachedRunner, publish_artifact
from harness.backend import ModelSpec
from harness.data import SPLITS, SuiteData
from harness.decide import decide
from harness.errors import UsageError, redact
from harness.fingerprint import file_sha256, runtime_environment
from harness.general import general_metric_info
from harness.metrics import METRICS
from harness.results import (ArmResult, Cost, DataFile, General, GeneralTask, Results, write_results,
                             write_samples)
from harness.stats import StatsConfig
from harness.suite import Suite


def default_out_dir(suite: Suite) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / suite.name / stamp


def select_arms(suite: Suite, only: list[str] | None) -> list[str]:
    names = list(suite.backends)
    if not only:
        return names
    unknown = [n for n in only if n not in names]
    if unknown:
        raise UsageError(f"--only: no arm named {', '.join(unknown)} in {suite.path}",
                         f"arms: {', '.join(names)}")
    return [n for n in names if n in only]


def environment(model: ModelSpec, eval_bf16: bool) -> dict:
    runtime = runtime_environment(("torch", "transformers", "peft", "bitsandbytes", "datasets", "torchmetrics"))
    import torch

    return {**runtime, "accelerator": "cuda" if torch.cuda.is_available() else "cpu", "train_dtype": model.train_dtype,
            "eval_dtype": "bfloat16 (weights cast from fp32 for evaluation)" if eval_bf16 else "float32"}


def new_results(suite: Suite, model: ModelSpec, data: SuiteData) -> Results:
    files = {}
    for split in SPLITS:
        source = getattr(suite.data, split)
        if source is None:
            continue
        local = suite.base_dir / source
        files[split] = DataFile(source=source, examples=len(getattr(data, split)),
                                sha256=None if source.startswith("hf:") else file_sha256(local))
    task = suite.task.model_dump()
    return Results(
        harness_version=__version__, created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        suite={"name": suite.name, "path": suite.path, "sha256": file_sha256(Path(suite.path)),
               "task": task, "metrics": list(suite.metrics), "seed": suite.seed,
               "primary_metric": suite.primary_metric, "decision": suite.decision.model_dump()},
        model={"ref": model.ref, "path": model.path, "train_dtype": model.train_dtype},
        data=files,
        metrics={m: {"higher_is_better": METRICS[m].higher_is_better, "variant": METRICS[m].variant}
                 for m in suite.metrics},
        environment=environment(model, suite.eval_bf16(model.train_dtype)), general=_general_header(data))


def _general_header(data: SuiteData) -> General | None:
    if data.general is None:
        return None
    tasks = {t.name: GeneralTask(kind=t.spec.kind, source=t.path, examples=len(t.items) - t.spec.shots,
                                 sha256=None if t.spec.kind == "lm_eval" else file_sha256(Path(t.path)))
             for t in data.general.tasks}
    return General(tasks=tasks, metrics={})


def stats_config(suite: Suite) -> StatsConfig:
    return StatsConfig(confidence=suite.stats.confidence or suite.decision.confidence,
                       resamples=suite.stats.resamples, seed=suite.seed)


def arm_result(suite: Suite, name: str, outcome: ArmOutcome) -> ArmResult:
    spec = suite.backends[name]
    base = {"backend": spec.type, "options": spec.options, "trains": _trains(spec.type)}
    if not outcome.ok:
        return ArmResult(**base, status="failed", error=outcome.error, exit_code=outcome.exit_code)
    s = outcome.stats
    cost = Cost(train_seconds=round(s.seconds, 3), train_cpu_seconds=round(s.cpu_seconds, 3), train_tokens=s.tokens, train_target_tokens=s.target_tokens,
                train_steps=s.steps, peak_memory_bytes=s.peak_memory_bytes, trainable_params=s.trainable_params,
                total_params=s.total_params, artifact_bytes=s.artifact_bytes,
                eval_seconds=round(outcome.eval_seconds, 3), eval_tokens=outcome.eval_tokens,
                general_eval_seconds=round(outcome.general_seconds, 3), eval_truncated=outcome.eval_truncated,
                train_skipped_examples=s.skipped_examples)
    return ArmResult(**base, status="ok", cost=cost, loss_curve=s.loss_curve, samples=f"samples/{name}.jsonl",
                     cached=outcome.cached, train_cached=s.reopened and not outcome.cached, notes=s.notes)


def _trains(backend: str) -> bool:
    return getattr(registry.get(backend), "trains", True)


def _job(suite: Suite, data: SuiteData, model: ModelSpec, out_dir: Path, name: str, backend: str,
         options: dict, test: bool, general: bool) -> ArmJob:
    return ArmJob(name=name, backend=backend, options=options, model=model, data=data,
                  batch_tokens=suite.eval.batch_tokens, workdir=str((out_dir / "arms" / name).resolve()),
                  evaluate_test=test, evaluate_general=general, eval_bf16=suite.eval_bf16(model.train_dtype),
                  overlong=suite.eval.overlong)


def _arm_job(suite: Suite, data: SuiteData, model: ModelSpec, out_dir: Path, name: str) -> ArmJob:
    """An arm's job: its test split always, the general tasks if it trains (a prompt arm's model is
    the base model, already scored on them)."""
    spec = suite.backends[name]
    return _job(suite, data, model, out_dir, name, spec.type, spec.options, True,
                _trains(spec.type) and data.general is not None)


def _write_general_rows(rows_by_task: dict, path: Path, general) -> None:
    write_samples(general_with_scores(general, rows_by_task), path)


def _record_failure(out_dir: Path, name: str, outcome: ArmOutcome) -> None:
    if outcome.traceback:
        (out_dir / "arms" / name).mkdir(parents=True, exist_ok=True)
        (out_dir / "arms" / name / "error.txt").write_text(redact(outcome.traceback), encoding="utf-8")


def base_general_job(suite, data, model, out_dir) -> ArmJob | None:
    """The untouched base model on the general tasks, once per run; every arm is paired against it."""
    if data.general is None:
        return None
    return _job(suite, data, model, out_dir, "base", "prompt", {"shots": 0}, False, True)


def run_base_general(data, out_dir, results, pending, config) -> dict | None:
    """The base model's general-task rows (pending: the outcome call of base_general_job)."""
    if pending is None:
        return None
    outcome = pending()
    if not outcome.ok:
        _record_failure(out_dir, "base", outcome)
        raise UsageError(f"the base model failed on the general tasks: {outcome.error}",
                         "fix the general set or run without general:")
    results.general.metrics = general_metric_info(data.general, outcome.general_rows)
    for name, rows in outcome.general_rows.items():   # lm-eval tasks: documents known only now
        results.general.tasks[name].examples = len(rows)
    results.general.base = general_values(data.general, outcome.general_rows, config)
    results.general.base_samples = "samples/general/base.jsonl"
    _write_general_rows(outcome.general_rows, out_dir / results.general.base_samples, data.general)
    return outcome.general_rows


def run_compare(suite: Suite, data: SuiteData, model: ModelSpec, out_dir: Path, arms: list[str],
                on_arm: Callable[[str, ArmResult], None] = lambda *_: None,
                runner: Callable[[ArmJob], ArmOutcome] = run_arm_isolated,
                cache: ArmCache | None = None) -> Results:
    """Every arm through train -> evaluate; with a cache, finished arms are reused and unfinished
    ones resume from their last checkpoint."""
    if cache is not None:
        runner = CachedRunner(runner, cache, model)
    config = stats_config(suite)
    results = new_results(suite, model, data)
    results.stats = config.describe()
    write_results(results, out_dir)
    # Every arm is submitted before any outcome is read: a runner that can, runs them side by side
    # (Ray); the local runner runs each when its outcome is read, in this order.
    base_job = base_general_job(suite, data, model, out_dir)
    base_pending = submit(runner, base_job) if base_job else None
    pending = {name: submit(runner, _arm_job(suite, data, model, out_dir, name)) for name in arms}
    base_general = run_base_general(data, out_dir, results, base_pending, config)
    prompt_arms = [n for n in suite.backends if not _trains(suite.backends[n].type)]
    zero_shot = next((n for n in prompt_arms if not suite.backends[n].options.get("shots")), None)
    rows: dict[str, list[dict]] = {}
    for name in arms:
        trains = _trains(suite.backends[name].type)
        outcome = pending[name]()
        result = arm_result(suite, name, outcome)
        results.arms[name] = result
        if outcome.ok:
            _publish_arm(suite, data, out_dir, name, outcome, result, rows, config,
                         base_general if not trains else outcome.general_rows, base_general, results)
        else:
            _record_failure(out_dir, name, outcome)
        annotate_task_comparisons(results, rows, data.task.labels, prompt_arms, zero_shot,
                                  suite.primary_metric, config)
        write_results(results, out_dir)
        on_arm(name, result)
    results.decision = decide(results)
    write_results(results, out_dir)
    return results


def _publish_arm(suite, data, out_dir, name, outcome, result, rows, config, general_rows, base_general,
                 results) -> None:
    metrics = {m: METRICS[m] for m in suite.metrics}
    rows[name] = with_scores(list(suite.metrics), outcome.rows, data.task.labels)
    write_samples(rows[name], out_dir / result.samples)
    result.metrics = metric_values(metrics, outcome.rows, data.task.labels, config)
    if outcome.artifact:
        artifact = Path(outcome.artifact).resolve()
        if not artifact.is_relative_to(out_dir.resolve()):          # in the cache: link it here
            artifact = publish_artifact(str(artifact), (out_dir / "arms" / name).resolve())
        result.artifact = artifact.relative_to(out_dir.resolve()).as_posix()
    if general_rows is not None and base_general is not None:
        result.general = general_values(data.general, general_rows, config)
        result.general_samples = f"samples/general/{name}.jsonl"
        _write_general_rows(general_rows, out_dir / result.general_samples, data.general)
        result.forgetting, result.forgetting_summary = forgetting(
            data.general, base_general, general_rows, results.general.base, config,
            suite.decision.max_forgetting, suite.decision.max_perplexity_increase)
