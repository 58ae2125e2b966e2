"""Formatting and selection helpers shared by the Markdown and HTML reports.

Everything here turns numbers already in results.json into text, or picks among them (the best
value, the Pareto front, the comparison against a given arm). Nothing here computes a statistic.
"""

from __future__ import annotations

from harness.decide import counts_cpu_time, training_seconds
from harness.results import ArmResult, Comparison, MetricValue, Results

DASH = "–"
TEST_NAMES = {"mcnemar-exact": "McNemar exact", "paired-bootstrap": "paired bootstrap"}
VERDICT_TEXT = {"GO": "GO: fine-tune", "NO-GO": "NO-GO: keep prompting", "INCONCLUSIVE": "INCONCLUSIVE"}


# -- numbers as text --------------------------------------------------------------------------------

def num(value: float | None, signed: bool = False) -> str:
    """A metric value: 3 decimals below 100, 1 above (perplexities)."""
    if value is None:
        return DASH
    sign = "+" if signed else ""
    text = f"{value:{sign}.3f}" if abs(value) < 100 else f"{value:{sign}.1f}"
    return text.replace("-", "−")


def interval(low: float | None, high: float | None, signed: bool = False) -> str:
    if low is None or high is None:
        return ""
    return f"[{num(low, signed)}, {num(high, signed)}]"


def p_value(p: float | None) -> str:
    if p is None:
        return DASH
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.3f}" if p < 0.1 else f"p={p:.2f}"


def test_name(test: str) -> str:
    return TEST_NAMES.get(test, test)


def metric_cell(m: MetricValue | None) -> str:
    """'0.812 [0.771, 0.852]' (no n: the n goes in the caption when every arm shares it)."""
    if m is None:
        return DASH
    ci = interval(m.ci_low, m.ci_high)
    return f"{num(m.value)} {ci}" if ci else num(m.value)


def delta_cell(c: Comparison | None) -> str:
    if c is None:
        return DASH
    return f"{num(c.difference, signed=True)} {interval(c.ci_low, c.ci_high, signed=True)} {p_value(c.p_value)}"


def cpu_seconds(cost) -> str:
    """An arm's training CPU time (what the cheapest-arm rule compares on a CPU-only run); a dash
    where it was not recorded (0: results written before it was, or a prompt arm)."""
    return seconds(cost.train_cpu_seconds) if cost.train_cpu_seconds else DASH


def seconds(s: float | None) -> str:
    if s is None:
        return DASH
    if s < 60:
        return f"{s:.1f} s" if s else "0 s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def count(n: int | None) -> str:
    """1234 -> '1.2 k', 134515008 -> '134.5 M'."""
    if n is None:
        return DASH
    for limit, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.1f} {unit}"
    return str(n)


def size(n: int | None) -> str:
    if n is None:
        return DASH
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def short_hash(h: str | None) -> str:
    return h[:12] if h else DASH


# -- picking among the recorded numbers ------------------------------------------------------------

def ok_arms(results: Results) -> dict[str, ArmResult]:
    return {k: a for k, a in results.arms.items() if a.status == "ok"}


def failed_arms(results: Results) -> dict[str, ArmResult]:
    return {k: a for k, a in results.arms.items() if a.status != "ok"}


def higher_is_better(results: Results, metric: str) -> bool:
    if metric in results.metrics:
        return bool(results.metrics[metric].get("higher_is_better", True))
    if results.general and metric in results.general.metrics:
        return bool(results.general.metrics[metric].get("higher_is_better", True))
    return True


def best_arms(results: Results, metric: str) -> set[str]:
    """Names of the arms holding the best value of `metric` (ties: all of them)."""
    values = {k: a.metrics[metric].value for k, a in ok_arms(results).items() if metric in a.metrics}
    if not values:
        return set()
    best = max(values.values()) if higher_is_better(results, metric) else min(values.values())
    return {k for k, v in values.items() if v == best}


def comparison(arm: ArmResult, metric: str, against: str | None, forgetting: bool = False) -> Comparison | None:
    if against is None:
        return None
    for c in arm.forgetting if forgetting else arm.comparisons:
        if c.metric == metric and c.against == against:
            return c
    return None


def improves(results: Results, c: Comparison) -> bool | None:
    """True/False when the interval excludes zero on the better/worse side, None when it straddles it."""
    if c.ci_low <= 0 <= c.ci_high:
        return None
    return (c.difference > 0) == higher_is_better(results, c.metric)


def primary_metric(results: Results) -> str | None:
    chosen = results.decision.policy.get("metric") if results.decision else None
    if chosen in results.metrics:
        return chosen
    return next(iter(results.metrics), None)


def cost_by_cpu(results: Results) -> bool:
    """Whether quality-vs-cost counts training CPU time rather than wall time: the cheapest-arm
    rule's choice (harness.decide.counts_cpu_time) over the trained arms, so the front and the
    recommendation weigh the same seconds."""
    trained = [k for k, a in ok_arms(results).items() if a.trains and a.cost is not None]
    return bool(trained) and counts_cpu_time(results, trained)


def training_cost_name(by_cpu: bool) -> str:
    return "training CPU time" if by_cpu else "training time (wall clock)"


def pareto_front(results: Results, metric: str | None) -> set[str]:
    """Arms not dominated on (quality = `metric`, cost = training seconds as cost_by_cpu counts
    them): no other arm is at least as good on both and strictly better on one."""
    if metric is None:
        return set()
    sign = 1 if higher_is_better(results, metric) else -1
    by_cpu = cost_by_cpu(results)
    points = {k: (sign * a.metrics[metric].value, training_seconds(a.cost, by_cpu))
              for k, a in ok_arms(results).items() if metric in a.metrics and a.cost is not None}

    def dominated(q: float, c: float) -> bool:
        return any(q2 >= q and c2 <= c and (q2 > q or c2 < c) for q2, c2 in points.values())

    return {k for k, (q, c) in points.items() if not dominated(q, c)}


def general_metrics(results: Results) -> list[str]:
    if results.general is None:
        return []
    names = list(results.general.metrics)
    for arm in results.arms.values():
        names += [m for m in arm.general if m not in names]
    return names


def forgetting_summary(arm: ArmResult) -> str:
    f = arm.forgetting_summary
    if f is None:
        return DASH
    if f.metric is None:
        return "no significant drop"
    drop = f"{f.drop * 100:.1f}%" if f.relative else num(f.drop)
    return f"{f.metric} worse by {drop} ({p_value(f.p_value)})"


def n_test(results: Results) -> int | None:
    return next((m.n for a in results.arms.values() for m in a.metrics.values()), None)


def flatten(prefix: str, value) -> list[tuple[str, str]]:
    """Nested dicts as ('a.b', 'text') pairs, for fingerprint and environment listings."""
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out += flatten(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    if isinstance(value, (list, tuple)):
        return [(prefix, ", ".join(str(v) for v in value))]
    return [(prefix, DASH if value is None else str(value))]
