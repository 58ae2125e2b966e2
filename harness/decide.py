"""The go/no-go policy: a pure function of results.json (the suite's decision: section is in it).

- GO: some trained arm beats the best prompt-only arm on the primary metric by more than
  `min_gain` with confidence (the lower end of the paired interval of its gain is above
  min_gain), and no veto applies to it (forgetting beyond the limits, cost limits). Among such
  arms, those not significantly worse than the best of them are candidates; the cheapest wins
  (training time, then peak memory).
- NO-GO: every trained arm is vetoed or its gain is below min_gain with confidence (the upper
  end of its interval is below min_gain): keep prompting, with the best prompt arm.
- INCONCLUSIVE: otherwise (an interval straddles min_gain), or the test set is too small. The
  number of test examples that would settle it comes from the observed interval: widths shrink
  as 1/sqrt(n).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.results import ArmResult, Comparison, Decision, Results
from harness.stats import examples_to_resolve

GIB, MIB = 1024 ** 3, 1024 ** 2


@dataclass
class Gain:
    """A trained arm's gain over the best prompt arm, oriented so that positive is better."""

    arm: str
    value: float
    low: float
    high: float
    p_value: float
    test: str
    n: int


def _gain(name: str, comparison: Comparison, higher_is_better: bool) -> Gain:
    c = comparison
    if higher_is_better:
        return Gain(name, c.difference, c.ci_low, c.ci_high, c.p_value, c.test, c.n)
    return Gain(name, -c.difference, -c.ci_high, -c.ci_low, c.p_value, c.test, c.n)


def _find(arm: ArmResult, metric: str, against: str) -> Comparison | None:
    return next((c for c in arm.comparisons if c.metric == metric and c.against == against), None)


def _vetoes(name: str, arm: ArmResult, policy: dict) -> list[str]:
    out = []
    f = arm.forgetting_summary
    if f and f.metric:
        limit = policy["max_perplexity_increase"] if f.relative else policy["max_forgetting"]
        if f.drop > limit:
            unit = f"{f.drop:+.1%} relative" if f.relative else f"{f.drop:.3f} points"
            out.append(f"{name} forgets: {f.metric} worse by {unit} than the base model (p={f.p_value:.2g}), "
                       f"over the limit {limit}")
    c = arm.cost
    limits = [("max_train_seconds", c.train_seconds, 1, "s of training"),
              ("max_peak_memory_gb", c.peak_memory_bytes, GIB, "GiB peak memory"),
              ("max_artifact_mb", c.artifact_bytes, MIB, "MiB artifact")] if c else []
    for key, value, scale, unit in limits:
        if policy.get(key) is not None and value / scale > policy[key]:
            out.append(f"{name} exceeds the cost limit: {value / scale:.1f} {unit} > {policy[key]}")
    return out


def _describe(g: Gain, metric: str, prompt_arm: str, min_gain: float) -> str:
    return (f"{g.arm}: {metric} gain over {prompt_arm} {g.value:+.3f} [{g.low:+.3f}, {g.high:+.3f}] "
            f"(n={g.n}, {g.test} p={g.p_value:.2g}) vs required gain {min_gain}")


def counts_cpu_time(results: Results, arms) -> bool:
    """Whether these arms' training cost is their CPU time rather than their wall time.

    On a CPU-only run, CPU time: a loaded machine once made lora's wall time 13x its quiet one and
    flipped the recommendation. Wall time where an accelerator did the work, or where an older run
    did not record CPU time for one of them. The reports' quality-vs-cost front uses the same rule."""
    return results.environment.get("accelerator") == "cpu" and all(
        results.arms[n].cost and results.arms[n].cost.train_cpu_seconds > 0 for n in arms)


def training_seconds(cost, by_cpu: bool) -> float:
    return cost.train_cpu_seconds if by_cpu else cost.train_seconds


def _cheapest_good(results: Results, winners: list[Gain], metric: str, alpha: float) -> tuple[str, str]:
    best = max(winners, key=lambda g: g.value)
    candidates = [best.arm]
    for g in winners:
        c = _find(results.arms[g.arm], metric, best.arm)
        if g.arm != best.arm and c is not None and not (c.p_value < alpha and (c.difference < 0) ==
                                                         results.metrics[metric]["higher_is_better"]):
            candidates.append(g.arm)

    by_cpu = counts_cpu_time(results, candidates)

    def cost(name):
        c = results.arms[name].cost
        return (training_seconds(c, by_cpu), c.peak_memory_bytes) if c else (0.0, 0)

    chosen = min(candidates, key=cost)
    if chosen == best.arm:
        return chosen, f"recommended {chosen}: the best gain" + (
            ", and no cheaper arm is statistically as good" if len(winners) > 1 else "")
    c = results.arms[chosen].cost
    spent = f"{c.train_cpu_seconds:.0f} s of CPU time training" if by_cpu else f"{c.train_seconds:.0f} s training"
    return chosen, (f"recommended {chosen}: not significantly worse than {best.arm} on {metric} and cheaper "
                    f"({spent}, {c.peak_memory_bytes / GIB:.2f} GiB peak)")


def decide(results: Results) -> Decision:
    policy = dict(results.suite.get("decision") or {})
    metric = results.suite.get("primary_metric") or next(iter(results.metrics))
    min_gain, alpha = policy.get("min_gain", 0.0), 1 - policy.get("confidence", 0.95)
    prompt_arm = results.best_prompt_arm

    def verdict(kind, reasons, arm=None, needed=None):
        return Decision(verdict=kind, arm=arm, prompt_arm=prompt_arm, reasons=reasons,
                        needed_test_examples=needed, policy={**policy, "metric": metric})

    if prompt_arm is None:
        return verdict("INCONCLUSIVE", ["no prompt-only arm finished: nothing to compare the trained arms with"])
    trained = {n: a for n, a in results.arms.items() if a.trains and a.status == "ok"}
    if not trained:
        return verdict("INCONCLUSIVE", ["no trained arm finished"])
    n = results.arms[prompt_arm].metrics[metric].n
    higher = results.metrics[metric]["higher_is_better"]
    reasons, winners, losers, open_ = [], [], [], []
    for name, arm in trained.items():
        comparison = _find(arm, metric, prompt_arm)
        if comparison is None:
            continue
        g = _gain(name, comparison, higher)
        vetoes = _vetoes(name, arm, policy)
        status = "clears" if g.low > min_gain else "falls short of" if g.high < min_gain else "straddles"
        reasons.append(f"{_describe(g, metric, prompt_arm, min_gain)}: {status} it")
        reasons += vetoes
        if vetoes:
            losers.append(g)
        else:
            {"clears": winners, "falls short of": losers, "straddles": open_}[status].append(g)
    failed = [n for n, a in results.arms.items() if a.status != "ok"]
    if failed:
        reasons.append(f"failed arms, not considered: {', '.join(failed)}")
    if n < policy.get("min_test_examples", 30):
        return verdict("INCONCLUSIVE", [f"only {n} test examples (policy min_test_examples "
                                        f"{policy.get('min_test_examples')}): too few to decide", *reasons],
                       needed=policy.get("min_test_examples"))
    if winners:
        arm, why = _cheapest_good(results, winners, metric, alpha)
        return verdict("GO", [why, *reasons], arm=arm)
    if not open_:
        return verdict("NO-GO", [f"keep prompting with {prompt_arm}: no trained arm gains {min_gain} or more "
                                 f"on {metric} with confidence and without a veto", *reasons])
    closest = max(open_, key=lambda g: abs(g.value - min_gain))
    needed = examples_to_resolve((closest.high - closest.low) / 2, abs(closest.value - min_gain), closest.n)
    settle = (f"about {needed} test examples (now {closest.n}) would settle {closest.arm}, if the observed "
              f"variance holds" if needed else f"{closest.arm}'s estimate sits on the threshold")
    return verdict("INCONCLUSIVE", [f"the interval of {closest.arm}'s gain straddles {min_gain}; {settle}",
                                    *reasons], needed=needed)
