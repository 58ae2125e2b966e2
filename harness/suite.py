"""A suite: pydantic models, and `load_suite(path)` which runs every check before any model loads.

`harness validate` and `harness compare` both call `load_suite`, so they report the same problems.
Every problem is reported at once, each with its place (`backends.lora.r`), the bad value and a fix
(pydantic's errors are worded by harness.field_problems).

YAML is read by harness.safe_yaml (duplicate keys, alias bombs, deep nesting and oversized files
refused; YAML 1.2 scalars).
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness import registry
from harness.errors import HarnessError, RefusedArtifact, SuiteError, shown
from harness.field_problems import pydantic_problems
from harness.metrics import METRICS
from harness.regression import RegressionSpec, regression_problems
from harness.safe_yaml import read_yaml

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Strict(BaseModel):
    # coerce_numbers_to_str: `labels: [0, 1]` means the labels "0" and "1".
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class TaskSpec(Strict):
    kind: Literal["classification", "generation"] = Field(description="What the model must produce.")
    prompt: str = Field(description="User message template; {column} is replaced by the row's value.")
    target: str = Field("{label}", description="Expected answer template.")
    labels: list[str] | None = Field(None, description="The label set (classification only).")
    system: str | None = Field(None, description="System message; default: the chat template's own.")
    max_new_tokens: int | None = Field(None, gt=0, le=4096,
                                       description="Greedy generation length; default from labels or 64.")
    stop: list[str] = Field(default_factory=list, description="Strings that end a generation.")


class DataSpec(Strict):
    train: str = Field(description="Train split: .jsonl/.csv/.parquet path or hf:NAME[:SPLIT].")
    validation: str | None = Field(None, description="Validation split (same forms).")
    test: str = Field(description="Test split (same forms).")


class EvalSpec(Strict):
    batch_tokens: int = Field(4096, gt=0, description="Token budget of one evaluation batch.")
    limit: int | None = Field(None, gt=0, description="Evaluate only the first N test examples.")
    overlong: Literal["error", "truncate"] = Field(
        "error", description="A prompt that does not fit the model's context: stop with an error naming the "
                             "example, or keep its shared prefix and last tokens (counted in results).")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Precision of evaluation: auto = bf16 weights (cast from fp32 for the "
                            "evaluation) where the CPU or GPU has fast bf16, else float32.")


class GeneralSpec(Strict):
    """The forgetting check: general tasks scored for the base model and every arm."""

    set: str | None = Field("default", description="General set YAML (relative to the suite), or default.")
    lm_eval: list[str] = Field(default_factory=list, description="lm-evaluation-harness task names.")
    lm_eval_include: str | None = Field(None, description="Directory of extra lm-eval task YAMLs.")
    limit: int | None = Field(None, gt=0, description="Score only the first N items of each task.")


class DecisionSpec(Strict):
    """The go/no-go policy (harness/decide.py)."""

    metric: str | None = Field(None, description="Primary task metric; default: the first of metrics.")
    min_gain: float = Field(0.0, ge=0, description="Smallest gain over the best prompt arm worth training "
                                                   "for, in the metric's units.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence of the intervals used to decide.")
    max_forgetting: float = Field(0.02, ge=0, description="Largest tolerated significant drop of a general "
                                                          "score (absolute, e.g. 0.02 = 2 points).")
    max_perplexity_increase: float = Field(0.10, ge=0, description="Largest tolerated significant relative "
                                                                   "rise of general perplexity.")
    max_train_seconds: float | None = Field(None, gt=0, description="Arms that train longer are vetoed.")
    max_peak_memory_gb: float | None = Field(None, gt=0, description="Arms that need more memory are vetoed.")
    max_artifact_mb: float | None = Field(None, gt=0, description="Arms with a bigger artifact are vetoed.")
    min_test_examples: int = Field(30, gt=0, description="Fewer test examples than this: INCONCLUSIVE.")


class StatsSpec(Strict):
    confidence: float | None = Field(None, gt=0.5, lt=1, description="Confidence of every reported "
                                                                      "interval; default decision.confidence.")
    resamples: int = Field(1000, ge=200, le=100000, description="Bootstrap resamples.")


class ResourcesSpec(Strict):
    """What one arm needs from an executor that schedules arms (--executor ray); the local
    executor runs arms one at a time and ignores it. Not part of any cache key."""

    cpus: float = Field(1, gt=0, description="CPU cores for the arm's process.")
    gpus: float = Field(0, ge=0, description="GPUs for the arm (at least `processes` when it trains in several).")
    memory_gb: float | None = Field(None, gt=0, description="Memory to reserve for the arm, in GB (default: none "
                                                             "reserved).")


class BackendSpec(BaseModel):
    """`type` picks the backend; `resources` is for the executor; every other key is an option
    checked against the backend's Options."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str
    resources: ResourcesSpec = ResourcesSpec()

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Suite(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(description="builtin:smollm2-135m-instruct, an HF model id or a local directory.")
    trust_remote_code: bool = Field(False, description="Let transformers import and run Python code shipped with "
                                                        "the model (auto_map). Only for code you have read.")
    seed: int = 0
    task: TaskSpec
    data: DataSpec
    metrics: list[str] = Field(min_length=1)
    backends: dict[str, BackendSpec] = Field(min_length=1)
    eval: EvalSpec = EvalSpec()
    general: GeneralSpec | None = Field(None, description="default, a general set file, or a mapping.")
    decision: DecisionSpec = DecisionSpec()
    stats: StatsSpec = StatsSpec()
    regression: RegressionSpec = RegressionSpec()
    path: str = Field("", description="The suite file (filled in by load_suite).")

    @field_validator("backends")
    @classmethod
    def _arm_names(cls, value):
        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"arm name {name!r} may use letters, digits, '_', '-', '.' only")
        return value

    @field_validator("general", mode="before")
    @classmethod
    def _general_shorthand(cls, value):
        return {"set": value} if isinstance(value, str) else value

    @property
    def base_dir(self) -> Path:
        return Path(self.path).parent

    def eval_bf16(self, train_dtype: str) -> bool:
        return self.eval.dtype == "bfloat16" or (self.eval.dtype == "auto" and train_dtype == "bfloat16")

    @property
    def primary_metric(self) -> str:
        return self.decision.metric or self.metrics[0]


def _backend_problems(raw_backends: Any) -> tuple[list[str], dict]:
    """Check every arm's type and options against its backend's Options model.

    Returns the problems and the backends with their options as the Options model reads them
    (`max_steps: 1e3` becomes 1000), keeping only the options the suite sets."""
    if not isinstance(raw_backends, dict):
        return [], raw_backends
    problems, normalized = [], dict(raw_backends)
    for arm, spec in raw_backends.items():
        if not isinstance(spec, dict) or "type" not in spec:
            continue  # pydantic reports the missing type
        type_name = spec["type"]
        try:
            backend = registry.get(str(type_name))
        except KeyError as exc:
            problems.append(f"backends.{arm}.type: {exc.args[0]}")
            continue
        options = {k: v for k, v in spec.items() if k not in ("type", "resources")}
        bad_keys = [k for k in options if not isinstance(k, str)]
        if bad_keys:
            problems += [f"backends.{arm}.{shown(k)}: option names are text; write a name such as "
                         f"{next(iter(backend.Options.model_fields), 'shots')}" for k in bad_keys]
            continue
        try:
            parsed = backend.Options.model_validate(options)
        except ValidationError as exc:
            for line in pydantic_problems(exc, prefix=f"backends.{arm}.", root=backend.Options):
                place = line.split(":")[0]
                if line.startswith(place + ": unknown key"):
                    key = place.rsplit(".", 1)[-1]
                    hint = registry.did_you_mean(key, backend.Options.model_fields)
                    line = f"{place}: unknown option for type {type_name}{hint}; " \
                           f"options: {', '.join(backend.Options.model_fields)}"
                problems.append(line)
            continue
        normalized[arm] = {"type": type_name, **parsed.model_dump(mode="json", exclude_unset=True),
                           **({"resources": spec["resources"]} if "resources" in spec else {})}
    return problems, normalized


def _metric_problems(raw: dict) -> list[str]:
    metrics = raw.get("metrics")
    kind = (raw.get("task") or {}).get("kind") if isinstance(raw.get("task"), dict) else None
    if not isinstance(metrics, list):
        return []
    problems = []
    for i, name in enumerate(metrics):
        if not isinstance(name, str):
            continue  # pydantic reports the type
        if name not in METRICS:
            problems.append(f"metrics.{i}: unknown metric {shown(name)}{registry.did_you_mean(name, METRICS)}; "
                            f"known: {', '.join(METRICS)}")
        elif isinstance(kind, str) and kind not in METRICS[name].kinds:
            problems.append(f"metrics.{i}: {name} does not apply to {kind} tasks; remove it")
    return problems


def template_fields(template: str) -> list[str]:
    """The {column} names a prompt/target template uses; ValueError for a malformed template."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def _template_problems(suite: Suite) -> list[str]:
    problems = []
    for field in ("prompt", "target"):
        template = getattr(suite.task, field)
        try:
            names = template_fields(template)
        except ValueError as exc:
            problems.append(f"task.{field}: {exc} in {shown(template)}; write {{{{ and }}}} for literal braces")
            continue
        for name in names:
            if not name or name.isdigit() or any(c in name for c in ".[]"):
                problems.append(f"task.{field}: {{{name}}} is not a column name; write {{column}} with a column of "
                                "the data, and {{ }} for literal braces")
    if suite.task.labels is not None and any(not label.strip() for label in suite.task.labels):
        problems.append("task.labels: a label is empty; remove it or write its text")
    if any(stop == "" for stop in suite.task.stop):
        problems.append("task.stop: an empty stop string would end every generation at once; remove it")
    return problems


def _model_problems(suite: Suite) -> tuple[list[str], RefusedArtifact | None]:
    """Checks of `model:` that need no model loaded: a built-in name, a local directory's files."""
    from harness import models

    try:
        if suite.model.startswith(models.BUILTIN_PREFIX):
            name = suite.model[len(models.BUILTIN_PREFIX):]
            if name not in models.BUILTINS:
                return [f"model: unknown built-in model {shown(name)}"
                        f"{registry.did_you_mean(name, models.BUILTINS)}; known: "
                        f"{', '.join(models.BUILTIN_PREFIX + n for n in models.BUILTINS)}"], None
            return [], None
        local = models.local_model_dir(suite.model, suite.base_dir)
        if local is not None:
            models.check_model_dir(local, suite.trust_remote_code)
    except RefusedArtifact as exc:
        return [], exc
    except HarnessError as exc:
        return [f"model: {exc.message.removeprefix('model: ').removeprefix('model ')}"
                + (f"; {exc.hint}" if exc.hint else "")], None
    return [], None


def _path_problems(suite: Suite) -> list:
    problems: list = []
    for split in ("train", "validation", "test"):
        source = getattr(suite.data, split)
        if source is None or source.startswith("hf:"):
            continue
        local = suite.base_dir / source
        if local.is_dir():
            problems.append(f"data.{split}: {source!r} is a directory; give a .jsonl, .csv or .parquet file, "
                            "or hf:DIR for a saved Hugging Face dataset")
        elif local.suffix.lower() not in (".jsonl", ".csv", ".parquet"):
            problems.append(f"data.{split}: unsupported file type {local.suffix or source!r}; use .jsonl, .csv, "
                            ".parquet or hf:NAME")
        elif not local.exists():
            problems.append(f"data.{split}: file {source!r} not found (paths are relative to the suite file, "
                            f"{suite.base_dir}); fix the path")
    if suite.task.kind == "classification" and not suite.task.labels:
        problems.append("task.labels: a classification task needs its label set, e.g. [negative, positive]")
    if suite.task.labels and len(set(suite.task.labels)) != len(suite.task.labels):
        problems.append(f"task.labels: labels repeat ({suite.task.labels}); list each label once")
    if suite.decision.metric and suite.decision.metric not in suite.metrics:
        problems.append(f"decision.metric: {suite.decision.metric!r} is not one of metrics {suite.metrics}; "
                        "add it to metrics or pick one of them")
    if suite.general and suite.general.set:
        from harness.general import general_set_problems, resolve_set_path

        set_path = resolve_set_path(suite.general.set, suite.base_dir)
        if not set_path.exists():
            problems.append(f"general.set: file {suite.general.set!r} not found (relative to the suite file); "
                            "fix the path, use default, or remove general:")
        else:
            problems += general_set_problems(set_path)
    if suite.general and suite.general.lm_eval_include and not (suite.base_dir / suite.general.lm_eval_include).is_dir():
        problems.append(f"general.lm_eval_include: directory {suite.general.lm_eval_include!r} not found "
                        "(relative to the suite file)")
    return problems + _template_problems(suite)


def load_suite(path: str | Path) -> Suite:
    """Read, validate and freeze a suite. Raises SuiteError listing every problem found (exit 2),
    or RefusedArtifact (exit 4) for a model directory that is unsafe to load and nothing else."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SuiteError(path, ["the suite must be a mapping of keys (name, model, task, data, ...); "
                                "see the suite reference in the README"])
    problems, backends = _backend_problems(raw.get("backends"))
    problems += _metric_problems(raw)
    suite = None
    try:
        data = {**raw, "path": str(path.resolve())}
        if "backends" in raw:
            data["backends"] = backends
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        # pydantic sees only each arm's `type`; options were checked above by the backend's model
        problems = pydantic_problems(exc, root=Suite) + problems
    refused = None
    if suite is not None:
        problems += _path_problems(suite) + regression_problems(suite)
        model_problems, refused = _model_problems(suite)
        problems += model_problems
    if refused is not None and not problems:
        raise RefusedArtifact(f"{path}: model: {refused.message.removeprefix('model ')}", refused.hint)
    if refused is not None:
        problems.append(f"model: {refused.message.removeprefix('model ')}; {refused.hint}")
    if problems:
        raise SuiteError(path, _dedupe(problems))
    return suite


def _dedupe(items: list) -> list:
    return list(dict.fromkeys(items))
