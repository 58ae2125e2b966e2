"""The compare loop: every arm of the suite through train -> evaluate, then results on disk.

results.json is rewritten after each arm, so an interrupted run keeps every finished arm.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
import sys
from pathlib import Path
from typing import Callable

from harness import __version__
from harness.arm import ArmJob, ArmOutcome, run_arm_isolated
from harness.backend import ModelSpec
from harness.data import SPLITS, SuiteData
from harness.errors import UsageError
from harness.metrics import METRICS
from harness.results import ArmResult, Cost, DataFile, MetricValue, Results, write_results, write_samples
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def environment(model: ModelSpec) -> dict:
    import importlib.metadata as md

    versions = {}
    for package in ("torch", "transformers", "peft", "bitsandbytes", "datasets", "torchmetrics"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"python": sys.version.split()[0], "platform": platform.platform(), "device": device,
            "cpu_threads": torch.get_num_threads(), "train_dtype": model.train_dtype,
            "eval_dtype": "float32", "versions": versions}


def new_results(suite: Suite, model: ModelSpec, data: SuiteData) -> Results:
    files = {}
    for split in SPLITS:
        source = getattr(suite.data, split)
        if source is None:
            continue
        local = suite.base_dir / source
        files[split] = DataFile(source=source, examples=len(getattr(data, split)),
                                sha256=None if source.startswith("hf:") else _sha256(local))
    task = suite.task.model_dump()
    return Results(
        harness_version=__version__, created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        suite={"name": suite.name, "path": suite.path, "sha256": _sha256(Path(suite.path)),
               "task": task, "metrics": list(suite.metrics), "seed": suite.seed},
        model={"ref": model.ref, "path": model.path, "train_dtype": model.train_dtype},
        data=files,
        metrics={m: {"higher_is_better": METRICS[m].higher_is_better, "variant": METRICS[m].variant}
                 for m in suite.metrics},
        environment=environment(model))


def arm_result(suite: Suite, name: str, outcome: ArmOutcome, n_test: int) -> ArmResult:
    spec = suite.backends[name]
    base = {"backend": spec.type, "options": spec.options}
    if not outcome.ok:
        return ArmResult(**base, status="failed", error=outcome.error, exit_code=outcome.exit_code)
    s = outcome.stats
    cost = Cost(train_seconds=round(s.seconds, 3), train_tokens=s.tokens, train_target_tokens=s.target_tokens,
                train_steps=s.steps, peak_memory_bytes=s.peak_memory_bytes, trainable_params=s.trainable_params,
                total_params=s.total_params, artifact_bytes=s.artifact_bytes,
                eval_seconds=round(outcome.eval_seconds, 3), eval_tokens=outcome.eval_tokens)
    return ArmResult(**base, status="ok", cost=cost, loss_curve=s.loss_curve,
                     metrics={m: MetricValue(value=v, n=n_test) for m, v in outcome.metrics.items()},
                     samples=f"samples/{name}.jsonl")


def run_compare(suite: Suite, data: SuiteData, model: ModelSpec, out_dir: Path, arms: list[str],
                on_arm: Callable[[str, ArmResult], None] = lambda *_: None,
                runner: Callable[[ArmJob], ArmOutcome] = run_arm_isolated) -> Results:
    results = new_results(suite, model, data)
    write_results(results, out_dir)
    for name in arms:
        spec = suite.backends[name]
        job = ArmJob(name=name, backend=spec.type, options=spec.options, model=model, data=data,
                     metrics=tuple(suite.metrics), batch_tokens=suite.eval.batch_tokens,
                     workdir=str((out_dir / "arms" / name).resolve()))
        outcome = runner(job)
        result = arm_result(suite, name, outcome, len(data.test))
        if outcome.ok:
            write_samples(outcome.rows, out_dir / result.samples)
            if outcome.artifact:
                result.artifact = Path(outcome.artifact).relative_to(out_dir.resolve()).as_posix()
        elif outcome.traceback:
            (out_dir / "arms" / name).mkdir(parents=True, exist_ok=True)
            (out_dir / "arms" / name / "error.txt").write_text(outcome.traceback, encoding="utf-8")
        results.arms[name] = result
        write_results(results, out_dir)
        on_arm(name, result)
    return results
