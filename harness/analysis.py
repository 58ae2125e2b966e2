"""From per-example rows to the numbers in results.json: values with intervals, paired comparisons,
what each trained arm fixed or broke, and the forgetting check. No model is touched here.
"""

from __future__ import annotations

from harness.general import GeneralSet
from harness.metrics import METRICS, Metric
from harness.results import Changes, Comparison, Forgetting, MetricValue, Results
from harness.stats import StatsConfig, interval, paired


def with_scores(metric_names: list[str], rows: list[dict], labels) -> list[dict]:
    """Rows plus each one's own score for every per-example metric (for pairing later)."""
    from harness.metrics import per_example_scores

    return [{**row, "scores": scores} for row, scores in zip(rows, per_example_scores(metric_names, rows, labels))]


def general_with_scores(general: GeneralSet, rows_by_task: dict[str, list[dict]]) -> list[dict]:
    """All tasks' rows in one list, each with its per-example scores."""
    out = []
    for task in general.tasks:
        rows = rows_by_task[task.name]
        columns = {m: metric.stats(rows, None)[:, 0] for m, metric in task.metrics(rows).items()
                   if metric.per_example}
        out += [{**row, "scores": {m: float(c[i]) for m, c in columns.items()}} for i, row in enumerate(rows)]
    return out


def metric_values(metrics: dict[str, Metric], rows: list[dict], labels, config: StatsConfig) -> dict:
    return {name: MetricValue(**interval(metric, metric.stats(rows, labels), config))
            for name, metric in metrics.items()}


def general_values(general: GeneralSet, rows_by_task: dict[str, list[dict]], config: StatsConfig) -> dict:
    values = {}
    for task in general.tasks:
        for name, metric in task.metrics(rows_by_task[task.name]).items():
            stats = metric.stats(rows_by_task[task.name], None)
            values[f"{task.name}/{name}"] = MetricValue(**interval(metric, stats, config))
    return values


def _compare(metric: Metric, name: str, rows_a, rows_b, labels, against: str, config) -> Comparison:
    ids_a, ids_b = [r["id"] for r in rows_a], [r["id"] for r in rows_b]
    if ids_a != ids_b:
        raise ValueError(f"cannot pair {name} against {against}: the examples differ")
    result = paired(metric, metric.stats(rows_a, labels), metric.stats(rows_b, labels), config)
    return Comparison(metric=name, against=against, **result)


def _is_better(metric: Metric, a: float, b: float) -> bool:
    return a > b if metric.higher_is_better else a < b


def best_prompt_arm(results: Results, prompt_arms: list[str], primary: str) -> str | None:
    """The prompt-only arm with the best value of the primary metric (first listed wins ties)."""
    best = None
    for name in prompt_arms:
        arm = results.arms.get(name)
        if arm is None or arm.status != "ok" or primary not in arm.metrics:
            continue
        if best is None or _is_better(METRICS[primary], arm.metrics[primary].value,
                                      results.arms[best].metrics[primary].value):
            best = name
    return best


def change_metric(metric_names: list[str], primary: str) -> str | None:
    """The 0/1 metric by which an example counts as fixed or broken: the primary one if it is 0/1."""
    for name in [primary, *metric_names]:
        if METRICS[name].binary:
            return name
    return None


def _changes(metric: str, rows_a, rows_b, against: str) -> Changes:
    fixed = [a["id"] for a, b in zip(rows_a, rows_b) if a["scores"][metric] > b["scores"][metric]]
    broke = [a["id"] for a, b in zip(rows_a, rows_b) if a["scores"][metric] < b["scores"][metric]]
    return Changes(against=against, metric=metric, fixed=fixed, broke=broke)


def annotate_task_comparisons(results: Results, rows: dict[str, list[dict]], labels, prompt_arms: list[str],
                              zero_shot: str | None, primary: str, config: StatsConfig) -> None:
    """Fill best_prompt_arm, and every other arm's comparisons (vs zero-shot and the best prompt arm)."""
    results.best_prompt_arm = best_prompt_arm(results, prompt_arms, primary)
    references = list(dict.fromkeys(a for a in (zero_shot, results.best_prompt_arm) if a))
    names = list(results.metrics)
    binary = change_metric(names, primary)
    for name, arm in results.arms.items():
        if arm.status != "ok" or name not in rows:
            continue
        arm.comparisons = [_compare(METRICS[m], m, rows[name], rows[ref], labels, ref, config)
                           for ref in references if ref != name and ref in rows for m in names]
        if arm.trains:  # the decision picks among trained arms that are not significantly worse
            arm.comparisons += [_compare(METRICS[primary], primary, rows[name], rows[other], labels, other, config)
                                for other, o in results.arms.items()
                                if other != name and o.trains and other in rows]
        best = results.best_prompt_arm
        arm.changes = (_changes(binary, rows[name], rows[best], best)
                       if binary and best and best != name and best in rows else None)


def forgetting(general: GeneralSet, base_rows: dict, arm_rows: dict, base_values: dict,
               config: StatsConfig, max_forgetting: float, max_ppl_increase: float
               ) -> tuple[list[Comparison], Forgetting]:
    """Paired comparisons of an arm's general scores with the base model's, and the worst drop.

    The worst drop is the significant one (p below 1 - confidence) that uses up most of its
    tolerance: absolute points for accuracy-like scores, relative change for perplexity.
    """
    comparisons, worst, severity = [], Forgetting(), 0.0
    for task in general.tasks:
        for name, metric in task.metrics(base_rows[task.name]).items():
            key = f"{task.name}/{name}"
            comparison = _compare(metric, key, arm_rows[task.name], base_rows[task.name], None, "base", config)
            comparisons.append(comparison)
            relative = not metric.higher_is_better
            drop = (comparison.difference / base_values[key].value if relative else -comparison.difference)
            limit = max_ppl_increase if relative else max_forgetting
            significant = comparison.p_value < 1 - config.confidence
            this = drop / limit if limit > 0 else float("inf") * drop
            if significant and drop > 0 and this > severity:
                severity = this
                worst = Forgetting(metric=key, drop=drop, relative=relative, p_value=comparison.p_value)
    return comparisons, worst
