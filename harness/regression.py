"""The regression gate's policy (a suite's `regression:` section) and its statistics.

    regression:
      metrics: [accuracy, perplexity]     # gated task metrics (default: all of the suite's metrics)
      general: [knowledge, text/perplexity]   # gated general tasks or task/metric (default: all; [] none)
      margin: {accuracy: 0.02, perplexity: 10%, knowledge: 0.03}   # or one margin for every gated metric
      confidence: 0.95

Non-inferiority, per gated metric, on the examples paired by id: d = candidate - baseline, oriented
so that positive is better (negated for lower-is-better metrics such as perplexity). The gate
passes a metric when the lower end of the two-sided (1 - 2*alpha) paired-bootstrap interval of
the oriented difference is above -margin, alpha = 1 - confidence: a one-sided test at level alpha
of "the candidate is worse by at least the margin". The interval is harness.stats.paired's
(seeded, the same resampled examples for both sides), so an identical candidate has every
resampled difference exactly 0 and always passes. 0/1 metrics use the same interval (McNemar's
discordant counts are reported beside it). A margin is a number in the metric's own units, or
"N%" of the baseline's value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from harness.metrics import Metric
from harness.stats import StatsConfig, paired

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")
CORPUS_0_100 = ("bleu", "chrf")


def parse_margin(value) -> float | str:
    """A margin as written: a positive number (metric units) or 'N%' (of the baseline value)."""
    if isinstance(value, bool):
        raise ValueError("a margin is a positive number or a percentage such as '5%'")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and _PERCENT.match(value):
        if float(_PERCENT.match(value).group(1)) <= 0:
            raise ValueError(f"margin {value!r} must be above 0%")
        return f"{float(_PERCENT.match(value).group(1)):g}%"
    else:
        try:
            number = float(value)    # YAML reads 1e-2 as a string
        except (TypeError, ValueError):
            raise ValueError(f"margin {value!r}: use a positive number (in the metric's units) or a "
                             "percentage of the baseline value such as '5%'") from None
    if not number > 0:
        raise ValueError(f"margin {value!r} must be > 0 (a margin of 0 would demand a significant "
                         "improvement, not the absence of a regression)")
    return number


class RegressionSpec(BaseModel):
    """What `harness regress` gates on, and how strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: list[str] | None = Field(None, description="Gated task metrics; default: all of the suite's "
                                                        "metrics.")
    general: list[str] | None = Field(None, description="Gated general tasks ('knowledge') or metrics "
                                                        "('knowledge/accuracy'); default: all; [] gates none "
                                                        "and skips the general tasks.")
    margin: float | str | dict[str, float | str] | None = Field(
        None, description="Largest tolerated worsening: one margin for every gated metric, or a mapping "
                          "from metric name, general task or task/metric ('*': every other gated metric) to "
                          "its margin. A number is in the metric's units; 'N%' is relative to the baseline "
                          "value. Unlisted metrics get "
                          "the default: 0.02 on 0-1 scales, 2 points for bleu/chrf, 10% for perplexity.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence of the one-sided non-inferiority "
                                                              "test (the lower end of a two-sided "
                                                              "2*confidence-1 interval).")
    probe_examples: int = Field(4, gt=0, le=64, description="Test prompts on which the candidate's logits "
                                                            "must differ from the base model's.")

    @field_validator("margin", mode="before")
    @classmethod
    def _margins(cls, value):
        if value is None:
            return None
        if not isinstance(value, dict):
            try:
                return parse_margin(value)
            except ValueError as exc:
                raise PydanticCustomError("margin", str(exc)) from None
        out = {}
        for key, item in value.items():
            try:
                out[str(key)] = parse_margin(item)
            except ValueError as exc:
                raise PydanticCustomError("margin", f"{key}: {exc}") from None
        return out


def regression_problems(suite) -> list[str]:
    """Cross-checks of the regression section against the rest of the suite (no model, no data)."""
    spec: RegressionSpec = suite.regression
    problems = []
    for i, name in enumerate(spec.metrics or []):
        if name not in suite.metrics:
            problems.append(f"regression.metrics.{i}: {name!r} is not one of metrics {list(suite.metrics)}")
    if spec.general and suite.general is None:
        problems.append("regression.general: the suite has no general tasks (add general: default)")
    return problems


@dataclass(frozen=True)
class Margin:
    amount: float
    relative: bool = False

    @classmethod
    def of(cls, value: float | str) -> "Margin":
        if isinstance(value, str) and value.endswith("%"):
            return cls(float(value[:-1]) / 100, relative=True)
        return cls(float(value))

    def absolute(self, baseline_value: float) -> float:
        return self.amount * abs(baseline_value) if self.relative else self.amount

    def describe(self, baseline_value: float) -> str:
        if self.relative:
            return f"{self.amount:.4g} x {baseline_value:.4g} = {self.absolute(baseline_value):.4g}"
        return f"{self.amount:.4g}"


def default_margin(metric: Metric) -> Margin:
    if not metric.higher_is_better:
        return Margin(0.10, relative=True)
    if metric.name in CORPUS_0_100:
        return Margin(2.0)
    return Margin(0.02)


def margin_for(spec: RegressionSpec, key: str, metric: Metric, task: str | None = None) -> Margin:
    """The margin of a gated metric: its key, its general task, '*' (every other metric), else the default."""
    if isinstance(spec.margin, dict):
        for name in (key, task, "*"):
            if name is not None and name in spec.margin:
                return Margin.of(spec.margin[name])
        return default_margin(metric)
    if spec.margin is not None:
        return Margin.of(spec.margin)
    return default_margin(metric)


@dataclass
class Check:
    """One gated metric: candidate against baseline, paired, with its non-inferiority verdict."""

    key: str                     # 'accuracy' (task) or 'knowledge/accuracy' (general)
    scope: str                   # 'task' or 'general'
    group: str                   # the suite name (task) or the general task's name
    higher_is_better: bool
    baseline: float
    candidate: float
    difference: float            # candidate - baseline, in the metric's units
    lower: float                 # lower end of the oriented difference's interval (>0 is better)
    margin: float                # absolute, in the metric's units
    margin_text: str
    confidence: float
    n: int
    passed: bool
    better: int | None = None    # 0/1 metrics: examples only the candidate gets right
    worse: int | None = None     # ... only the baseline gets right
    broke: list[str] = field(default_factory=list)   # 0/1 metrics: ids right in the baseline, wrong now

    @property
    def worst(self) -> float:
        """The worst plausible change (one-sided bound), in the metric's own direction and units."""
        return self.lower if self.higher_is_better else -self.lower

    @property
    def limit(self) -> float:
        """The tolerated worsening as a change: -margin (higher is better) or +margin (lower is better)."""
        return -self.margin if self.higher_is_better else self.margin

    def reason(self) -> str:
        direction = "higher" if self.higher_is_better else "lower"
        verdict = "within" if self.passed else "beyond"
        return (f"{self.key}: {self.candidate:.4g} vs baseline {self.baseline:.4g} ({direction} is better), change "
                f"{self.difference:+.4g}; worst plausible change {self.worst:+.4g} (one-sided {self.confidence:.0%}) "
                f"is {verdict} the limit {self.limit:+.4g} (margin {self.margin_text})"
                + (f"; {self.worse} examples got worse, {self.better} better" if self.worse is not None else ""))


def non_inferiority(metric: Metric, key: str, scope: str, group: str, stats_new, stats_base,
                    ids: list[str], margin: Margin, confidence: float, resamples: int, seed: int) -> Check:
    """Rows of stats_new and stats_base are the same examples, in the same order."""
    config = StatsConfig(confidence=2 * confidence - 1, resamples=resamples, seed=seed)
    result = paired(metric, stats_new, stats_base, config)
    base_value = metric.score(stats_base)
    lower = result["ci_low"] if metric.higher_is_better else -result["ci_high"]
    absolute = margin.absolute(base_value)
    check = Check(key=key, scope=scope, group=group, higher_is_better=metric.higher_is_better,
                  baseline=base_value, candidate=metric.score(stats_new), difference=result["difference"],
                  lower=lower, margin=absolute, margin_text=margin.describe(base_value), confidence=confidence,
                  n=result["n"], passed=lower > -absolute)
    if metric.binary:
        check.better, check.worse = result["better"], result["worse"]
        check.broke = [i for i, a, b in zip(ids, stats_new[:, 0], stats_base[:, 0]) if b > 0.5 >= a]
    return check
