"""A suite: pydantic models, and `load_suite(path)` which runs every check before any model loads.

`harness validate` and `harness compare` both call `load_suite`, so they report the same problems.
Every problem is reported at once, each with its place (`backends.lora.r`), the bad value and a fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness import registry
from harness.errors import SuiteError
from harness.metrics import METRICS

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Matmul precision of evaluation: auto = bf16 autocast where the CPU or GPU "
                            "has fast bf16 (weights stay fp32), else float32.")


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


class BackendSpec(BaseModel):
    """`type` picks the backend; every other key is an option checked against its Options."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Suite(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(description="builtin:smollm2-135m-instruct, an HF model id or a local directory.")
    seed: int = 0
    task: TaskSpec
    data: DataSpec
    metrics: list[str] = Field(min_length=1)
    backends: dict[str, BackendSpec] = Field(min_length=1)
    eval: EvalSpec = EvalSpec()
    general: GeneralSpec | None = Field(None, description="default, a general set file, or a mapping.")
    decision: DecisionSpec = DecisionSpec()
    stats: StatsSpec = StatsSpec()
    path: str = Field("", description="The suite file (filled in by load_suite).")

    @field_validator("backends")
    @classmethod
    def _arm_names(cls, value):
        import re
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SuiteError(path, [f"cannot read the suite file: {exc.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError(path, [f"byte {exc.start}: not UTF-8; save the file as UTF-8"]) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(path, [f"{where}invalid YAML: {problem}"]) from None


def _place(loc) -> str:
    return ".".join(str(part) for part in loc)


def _pydantic_problems(error: ValidationError, prefix: str = "") -> list[str]:
    problems = []
    for item in error.errors():
        place = prefix + _place(item["loc"])
        if item["type"] == "extra_forbidden":
            problems.append(f"{place}: unknown key (remove it or check its spelling)")
            continue
        shown = item.get("input")
        value = "" if item["type"] == "missing" else f" (got {shown!r})"
        problems.append(f"{place}: {item['msg']}{value}")
    return problems


def _backend_problems(raw_backends: Any) -> list[str]:
    """Check every arm's type and options against its backend's Options model."""
    if not isinstance(raw_backends, dict):
        return []
    problems = []
    for arm, spec in raw_backends.items():
        if not isinstance(spec, dict) or "type" not in spec:
            continue  # pydantic reports the missing type
        type_name = spec["type"]
        try:
            backend = registry.get(str(type_name))
        except KeyError as exc:
            problems.append(f"backends.{arm}.type: {exc.args[0]}")
            continue
        options = {k: v for k, v in spec.items() if k != "type"}
        try:
            backend.Options(**options)
        except ValidationError as exc:
            for line in _pydantic_problems(exc, prefix=f"backends.{arm}."):
                if "unknown key" in line:
                    key = line.split(":")[0].rsplit(".", 1)[-1]
                    hint = registry.did_you_mean(key, backend.Options.model_fields)
                    line = f"{line.split(':')[0]}: unknown option for type {type_name}{hint}; " \
                           f"options: {', '.join(backend.Options.model_fields)}"
                problems.append(line)
    return problems


def _metric_problems(raw: dict) -> list[str]:
    metrics = raw.get("metrics")
    kind = (raw.get("task") or {}).get("kind") if isinstance(raw.get("task"), dict) else None
    if not isinstance(metrics, list):
        return []
    problems = []
    for i, name in enumerate(metrics):
        if name not in METRICS:
            problems.append(f"metrics.{i}: unknown metric {name!r}{registry.did_you_mean(name, METRICS)}; "
                            f"known: {', '.join(METRICS)}")
        elif kind and kind not in METRICS[name].kinds:
            problems.append(f"metrics.{i}: {name} does not apply to {kind} tasks")
    return problems


def _path_problems(suite: Suite) -> list[str]:
    problems = []
    for split in ("train", "validation", "test"):
        source = getattr(suite.data, split)
        if source is None or source.startswith("hf:"):
            continue
        if not (suite.base_dir / source).exists():
            problems.append(f"data.{split}: file {source!r} not found (paths are relative to the suite file, "
                            f"{suite.base_dir})")
    if suite.task.kind == "classification" and not suite.task.labels:
        problems.append("task.labels: a classification task needs its label set, e.g. [negative, positive]")
    if suite.task.labels and len(set(suite.task.labels)) != len(suite.task.labels):
        problems.append(f"task.labels: labels repeat ({suite.task.labels})")
    if suite.decision.metric and suite.decision.metric not in suite.metrics:
        problems.append(f"decision.metric: {suite.decision.metric!r} is not one of metrics {suite.metrics}")
    if suite.general and suite.general.set:
        from harness.general import resolve_set_path

        if not resolve_set_path(suite.general.set, suite.base_dir).exists():
            problems.append(f"general.set: file {suite.general.set!r} not found (relative to the suite file)")
    return problems


def load_suite(path: str | Path) -> Suite:
    """Read, validate and freeze a suite. Raises SuiteError listing every problem found."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SuiteError(path, ["the suite must be a mapping of keys (name, model, task, data, ...)"])
    problems = _backend_problems(raw.get("backends")) + _metric_problems(raw)
    suite = None
    try:
        suite = Suite(**{**raw, "path": str(path.resolve())})
    except ValidationError as exc:
        # pydantic sees only each arm's `type`; options were checked above by the backend's model
        problems = _pydantic_problems(exc) + problems
    except TypeError as exc:
        problems.append(str(exc))
    if suite is not None:
        problems += _path_problems(suite)
    if problems:
        raise SuiteError(path, _dedupe(problems))
    return suite


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
