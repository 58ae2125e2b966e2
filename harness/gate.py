"""The regression gate: score one candidate, record it as a baseline, or compare it with a baseline.

    harness eval     SUITE --adapter PATH | --model PATH
    harness baseline SUITE --adapter PATH | --model PATH --out FILE
    harness regress  SUITE --adapter PATH | --model PATH --baseline FILE [--junit FILE] [--markdown FILE]

One path for all three: check the candidate directory before anything loads (harness.candidate),
load the base model once, fingerprint it, probe that the candidate changes its logits, apply
the candidate, and evaluate it with the same code as `harness compare` (harness.evaluate on the
test split, harness.general on the gated general tasks), in bf16 where compare uses it.

A baseline file (JSON) keeps the candidate's metrics, its per-example rows (so regress pairs
by example id and recomputes any metric from them), and the fingerprints of everything the
numbers depend on (harness.fingerprint). `regress` refuses to compare across fingerprints
(exit 7, naming each one that differs), then runs a non-inferiority test per gated metric
(harness.regression). Exit 1 when a gated metric may be worse than the baseline by more than
its margin, or when the candidate's logits equal the base model's (an untrained or unattached
adapter must fail the gate, never pass it).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from harness import __version__
from harness.backend import ModelSpec
from harness.candidate import Candidate, Probe, inspect, open_candidate
from harness.errors import NotComparable, SuiteError, UsageError
from harness.fingerprint import data_fingerprints, decoding_fingerprints, differences, runtime_environment
from harness.regression import (Check, RegressionSpec, margin_for, non_inferiority, parse_margin,
                                regression_problems)
from harness.results import MetricValue, atomic_write_text
from harness.stats import StatsConfig

BASELINE_FORMAT = "harness-baseline"
BASELINE_VERSION = 1


class Baseline(BaseModel):
    """The baseline file: `harness baseline` writes it, `harness regress` reads it."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["harness-baseline"] = BASELINE_FORMAT
    schema_version: int = BASELINE_VERSION
    harness_version: str
    created: str
    suite: dict                              # name, path
    model: dict                              # ref, path
    candidate: dict                          # kind, path, sha256, base_model_name_or_path
    fingerprints: dict[str, str]
    environment: dict
    probe: dict                              # prompts, max_abs_diff
    metrics: dict[str, MetricValue]
    general: dict[str, MetricValue]
    rows: list[dict]                         # per test example (harness.evaluate rows)
    general_rows: dict[str, list[dict]]      # per gated general task: per item
    seconds: dict[str, float]


@dataclass
class Context:
    """A loaded suite, its data and base model, and the effective regression policy."""

    suite: object
    data: object
    base: ModelSpec
    spec: RegressionSpec
    general_tasks: tuple            # the general tasks with at least one gated metric
    gated: Callable[[str], bool]    # is 'task/metric' gated?

    @property
    def bf16(self) -> bool:
        return self.suite.eval_bf16(self.base.train_dtype)

    @property
    def overlong(self) -> str:
        return getattr(self.suite.eval, "overlong", "error")

    @property
    def stats(self) -> StatsConfig:
        return StatsConfig(confidence=self.suite.stats.confidence or self.suite.decision.confidence,
                           resamples=self.suite.stats.resamples, seed=self.suite.seed)


@dataclass
class Evaluation:
    candidate: Candidate
    fingerprints: dict[str, str]
    probe: Probe
    rows: list[dict]
    general_rows: dict[str, list[dict]]
    metrics: dict[str, MetricValue]
    general: dict[str, MetricValue]
    seconds: dict[str, float]


@dataclass
class GateResult:
    suite: str
    candidate: Candidate
    baseline: Baseline
    checks: list[Check]
    probe: Probe
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.probe.applied and all(c.passed for c in self.checks)

    def failures(self) -> list[str]:
        out = [] if self.probe.applied else [f"adapter applied: {self.probe.describe()}"]
        return out + [c.reason() for c in self.checks if not c.passed]


# -- setup ----------------------------------------------------------------------------------------------

def _with_overrides(spec: RegressionSpec, margins: tuple[str, ...], confidence: float | None) -> RegressionSpec:
    """--margin 0.02 | --margin 5% | --margin accuracy=0.01 (repeatable); --confidence 0.9."""
    update = {}
    if confidence is not None:
        if not 0.5 < confidence < 1:
            raise UsageError(f"--confidence {confidence}: must be between 0.5 and 1")
        update["confidence"] = confidence
    if margins:
        scalar = [m for m in margins if "=" not in m]
        named = dict(m.split("=", 1) for m in margins if "=" in m)
        if len(scalar) > 1:
            raise UsageError(f"--margin: one margin for every metric ({', '.join(scalar)}), or NAME=MARGIN")
        try:
            table = {k.strip(): parse_margin(v.strip()) for k, v in named.items()}
            every = parse_margin(scalar[0]) if scalar else None
        except ValueError as exc:
            raise UsageError(f"--margin: {exc}") from None
        if not table:
            update["margin"] = every
        else:
            current = spec.margin if isinstance(spec.margin, dict) else (
                {"*": spec.margin} if spec.margin is not None else {})
            update["margin"] = {**current, **({"*": every} if every is not None else {}), **table}
    return spec.model_copy(update=update)


def _gated_general(suite, data, spec: RegressionSpec):
    """The general tasks to evaluate and a predicate on 'task/metric' keys."""
    if data.general is None or spec.general == []:
        return (), (lambda key: False)
    tasks = {t.name: t for t in data.general.tasks}
    if spec.general is None:
        return tuple(tasks.values()), (lambda key: True)
    from harness.general import TASK_METRICS

    problems = []
    for i, name in enumerate(spec.general):
        task, _, metric = name.partition("/")
        if task not in tasks:
            problems.append(f"regression.general.{i}: no general task {task!r}; tasks: {', '.join(tasks)}")
        elif metric and tasks[task].spec.kind in TASK_METRICS and metric not in TASK_METRICS[tasks[task].spec.kind]:
            problems.append(f"regression.general.{i}: task {task!r} has no metric {metric!r}; metrics: "
                            f"{', '.join(TASK_METRICS[tasks[task].spec.kind])}")
    if problems:
        raise SuiteError(suite.path, problems)
    wanted = set(spec.general)
    chosen = tuple(t for t in data.general.tasks
                   if t.name in wanted or any(w.split("/", 1)[0] == t.name for w in wanted))
    return chosen, (lambda key: key in wanted or key.split("/", 1)[0] in wanted)


def _margin_problems(suite, data, spec: RegressionSpec) -> list[str]:
    """Every key of a margin mapping must name a task metric, a general task or task/metric, or '*'."""
    from harness.general import TASK_METRICS
    from harness.registry import did_you_mean

    if not isinstance(spec.margin, dict):
        return []
    known = {"*", *suite.metrics}
    for task in (data.general.tasks if data.general else ()):
        known.add(task.name)
        known.update(f"{task.name}/{m}" for m in TASK_METRICS.get(task.spec.kind, {}))
    lm_eval = tuple(f"{t.name}/" for t in (data.general.tasks if data.general else ()) if t.spec.kind == "lm_eval")
    return [f"regression.margin.{key}: no metric, general task or task/metric of that name"
            f"{did_you_mean(key, known)}; known: {', '.join(sorted(known))}"
            for key in spec.margin if key not in known and not key.startswith(lm_eval)]


def suite_name(suite_path: Path) -> str:
    """The suite's name for reports about a gate that failed early; the file's stem if unreadable."""
    from harness.suite import load_suite

    try:
        return load_suite(suite_path).name
    except Exception:  # noqa: BLE001 - the error itself is reported by the gate
        return Path(suite_path).stem


def load_context(suite_path: Path, margins: tuple[str, ...] = (), confidence: float | None = None) -> Context:
    from harness import models
    from harness.data import load_data
    from harness.suite import load_suite

    suite = load_suite(suite_path)
    problems = regression_problems(suite)
    if problems:
        raise SuiteError(suite.path, problems)
    spec = _with_overrides(suite.regression, margins, confidence)
    data = load_data(suite)
    tasks, gated = _gated_general(suite, data, spec)
    problems = _margin_problems(suite, data, spec)
    if problems:
        raise SuiteError(suite.path, problems)
    base = models.resolve(suite.model, suite.base_dir, trust_remote_code=suite.trust_remote_code)
    return Context(suite, data, base, spec, tasks, gated)


def check_candidate(ctx: Context, adapter: Path | None, model: Path | None, allow_pickle: bool,
                    allow_base_mismatch: bool) -> Candidate:
    return inspect(adapter, model, ctx.base, allow_pickle=allow_pickle, allow_base_mismatch=allow_base_mismatch)


# -- evaluation -----------------------------------------------------------------------------------------

def _probe_prompts(ctx: Context):
    from harness.prompts import encode_prompt, render_prompt

    examples = ctx.data.test[: ctx.spec.probe_examples]
    return lambda tok: [encode_prompt(tok, render_prompt(tok, ctx.data.task, (), ex)) for ex in examples]


def evaluate_candidate(ctx: Context, candidate: Candidate, allow_pickle: bool = False,
                       check: Callable[[dict], None] = lambda fingerprints: None) -> Evaluation:
    """Load, fingerprint, probe, then (after `check` accepted the fingerprints) score the candidate."""
    from harness.analysis import general_values, metric_values
    from harness.backend import ModelHandle
    from harness.evaluate import default_max_new_tokens, evaluate
    from harness.general import GeneralSet, evaluate_general
    from harness.metrics import METRICS

    opened = open_candidate(candidate, ctx.base, _probe_prompts(ctx), allow_pickle)
    tok = opened.tokenizer
    fingerprints = {**data_fingerprints(ctx.suite, ctx.data, ctx.general_tasks),
                    **decoding_fingerprints(default_max_new_tokens(tok, ctx.data.task), ctx.data.task.stop, ctx.bf16,
                                            ctx.overlong),
                    **opened.fingerprints}
    check(fingerprints)
    seconds = {"load_and_probe": opened.seconds}
    start = time.perf_counter()
    out = evaluate(ModelHandle(model=opened.model, tokenizer=tok), ctx.data.test, ctx.data.task,
                   ctx.suite.eval.batch_tokens, desc="candidate eval", bf16=ctx.bf16, overlong=ctx.overlong)
    seconds["test"] = time.perf_counter() - start
    general_rows, general = {}, {}
    if ctx.general_tasks:
        start = time.perf_counter()
        subset = GeneralSet(path=ctx.data.general.path, tasks=ctx.general_tasks)
        general_rows = evaluate_general(opened.model, tok, subset, ctx.suite.eval.batch_tokens, ctx.bf16)
        general = general_values(subset, general_rows, ctx.stats)
        seconds["general"] = time.perf_counter() - start
    metrics = metric_values({m: METRICS[m] for m in ctx.suite.metrics}, out.rows, ctx.data.task.labels, ctx.stats)
    return Evaluation(candidate, fingerprints, opened.probe, out.rows, general_rows, metrics, general, seconds)


def environment() -> dict:
    return {**runtime_environment(("torch", "transformers", "peft")), "harness_code": evaluation_code_sha256()}


EVALUATION_CODE = ("evaluate.py", "general.py", "prompts.py", "metrics.py", "candidate.py", "models.py")


def evaluation_code_sha256() -> str:
    """The harness source that turns a model into per-example numbers: a baseline recorded by other
    code may differ for that reason alone (reported as a note, not a reason to refuse)."""
    from harness.fingerprint import files_sha256

    return files_sha256(Path(__file__).parent, EVALUATION_CODE)


def make_baseline(ctx: Context, ev: Evaluation) -> Baseline:
    return Baseline(harness_version=__version__,
                    created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    suite={"name": ctx.suite.name, "path": ctx.suite.path},
                    model={"ref": ctx.base.ref, "path": ctx.base.path}, candidate=ev.candidate.describe(),
                    fingerprints=ev.fingerprints, environment=environment(),
                    probe={"prompts": ev.probe.prompts, "max_abs_diff": ev.probe.max_abs_diff},
                    metrics=ev.metrics, general=ev.general, rows=ev.rows, general_rows=ev.general_rows,
                    seconds={k: round(v, 3) for k, v in ev.seconds.items()})


def write_baseline(baseline: Baseline, path: Path) -> None:
    atomic_write_text(path, baseline.model_dump_json() + "\n")


def read_baseline(path: Path) -> Baseline:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--baseline {path}: cannot read ({exc})",
                         "give a file written by harness baseline") from None
    if not isinstance(raw, dict) or raw.get("format") != BASELINE_FORMAT:
        raise UsageError(f"--baseline {path}: not a baseline file", "write one with harness baseline SUITE "
                                                                    "--adapter PATH --out FILE")
    if raw.get("schema_version") != BASELINE_VERSION:
        raise NotComparable(f"--baseline {path}: baseline format version {raw.get('schema_version')}, this "
                            f"harness reads {BASELINE_VERSION}", "record the baseline again with this harness")
    try:
        return Baseline(**raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"--baseline {path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


# -- comparison -----------------------------------------------------------------------------------------

def _not_comparable(baseline: Baseline, path: Path, problems: list[str]) -> NotComparable:
    return NotComparable("\n".join(f"{path}: not comparable: {problem}" for problem in problems),
                         f"the baseline was recorded for suite {baseline.suite.get('name')!r} with candidate "
                         f"{baseline.candidate.get('path')}; record a new baseline for this suite, model and data")


def _align(base_rows: list[dict], new_rows: list[dict], where: str) -> list[dict]:
    """The baseline's rows in the candidate's order, paired by example id."""
    new_ids = [r["id"] for r in new_rows]
    base_ids = [r["id"] for r in base_rows]
    if base_ids == new_ids:
        return base_rows
    by_id = {r["id"]: r for r in base_rows}
    if len(by_id) != len(base_rows) or len(set(new_ids)) != len(new_ids) or set(by_id) != set(new_ids):
        missing = sorted(set(new_ids) - set(by_id))[:5]
        raise NotComparable(f"{where}: the baseline's examples are not this run's (e.g. missing ids {missing})")
    return [by_id[i] for i in new_ids]


def gate_checks(ctx: Context, ev: Evaluation, baseline: Baseline) -> list[Check]:
    from harness.metrics import METRICS

    spec, cfg, labels = ctx.spec, ctx.stats, ctx.data.task.labels
    checks = []
    base_rows = _align(baseline.rows, ev.rows, "test split")
    ids = [r["id"] for r in ev.rows]
    for name in ctx.suite.metrics if spec.metrics is None else spec.metrics:
        metric = METRICS[name]
        checks.append(non_inferiority(metric, name, "task", ctx.suite.name, metric.stats(ev.rows, labels),
                                      metric.stats(base_rows, labels), ids, margin_for(spec, name, metric),
                                      spec.confidence, cfg.resamples, cfg.seed))
    for task in ctx.general_tasks:
        new = ev.general_rows[task.name]
        if task.name not in baseline.general_rows:
            raise NotComparable(f"general task {task.name!r} is gated but not in the baseline",
                                "record the baseline again with this suite")
        old = _align(baseline.general_rows[task.name], new, f"general task {task.name}")
        task_ids = [r["id"] for r in new]
        for name, metric in task.metrics(new).items():
            key = f"{task.name}/{name}"
            if ctx.gated(key):
                margin = margin_for(spec, key, metric, task.name)
                checks.append(non_inferiority(metric, key, "general", task.name, metric.stats(new, None),
                                              metric.stats(old, None), task_ids, margin, spec.confidence,
                                              cfg.resamples, cfg.seed))
    return checks


def run_regress(ctx: Context, candidate: Candidate, baseline_path: Path, allow_pickle: bool = False) -> GateResult:
    start = time.perf_counter()
    baseline = read_baseline(baseline_path)
    # What can be checked before the model loads: suite, task, data, general tasks.
    early = data_fingerprints(ctx.suite, ctx.data, ctx.general_tasks)
    problems = differences(baseline.fingerprints, early)
    if problems:
        raise _not_comparable(baseline, baseline_path, problems)

    def check(fingerprints: dict) -> None:
        late = differences(baseline.fingerprints, fingerprints)
        if late:
            raise _not_comparable(baseline, baseline_path, late)

    ev = evaluate_candidate(ctx, candidate, allow_pickle, check)
    checks = gate_checks(ctx, ev, baseline)
    notes = list(candidate.notes)
    if candidate.sha256 == baseline.candidate.get("sha256"):
        notes.append("the candidate's files are identical to the baseline's")
    now = environment()
    if baseline.environment.get("versions") != now["versions"]:
        notes.append(f"library versions differ from the baseline's: {baseline.environment.get('versions')} "
                     f"then, {now['versions']} now; small differences may come from them, not the candidate")
    if baseline.environment.get("harness_code") != now["harness_code"]:
        notes.append(f"the harness's evaluation code differs from the one that recorded the baseline (harness "
                     f"{baseline.harness_version} then, {__version__} now); small differences may come from it, "
                     "not the candidate")
    seconds = {**ev.seconds, "total": time.perf_counter() - start}
    return GateResult(ctx.suite.name, candidate, baseline, checks, ev.probe, notes, seconds)
