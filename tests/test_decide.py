"""The go/no-go policy on hand-made results: each verdict, the veto, the cheapest-good choice."""

from __future__ import annotations

from harness.decide import decide
from harness.results import ArmResult, Comparison, Cost, Forgetting, MetricValue, Results

POLICY = {"metric": "accuracy", "min_gain": 0.03, "confidence": 0.95, "max_forgetting": 0.02,
          "max_perplexity_increase": 0.1, "max_train_seconds": None, "max_peak_memory_gb": None,
          "max_artifact_mb": None, "min_test_examples": 30}


def _cost(seconds, memory_gib=1.0):
    return Cost(train_seconds=seconds, train_tokens=1, train_target_tokens=1, train_steps=1,
                peak_memory_bytes=int(memory_gib * 1024 ** 3), trainable_params=1, total_params=1,
                artifact_bytes=1, eval_seconds=1, eval_tokens=1)


def _cmp(against, diff, low, high, p, metric="accuracy", n=300):
    return Comparison(metric=metric, against=against, difference=diff, ci_low=low, ci_high=high, p_value=p,
                      test="mcnemar-exact", n=n)


def _arm(value, comparisons=(), trains=True, seconds=0.0, forgetting=None, memory_gib=1.0, n=300):
    return ArmResult(backend="lora" if trains else "prompt", options={}, status="ok", trains=trains,
                     metrics={"accuracy": MetricValue(value=value, n=n, ci_low=value - 0.05, ci_high=value + 0.05)},
                     comparisons=list(comparisons), cost=_cost(seconds, memory_gib),
                     forgetting_summary=forgetting or Forgetting())


def _results(arms, policy=None):
    return Results(harness_version="0", created="now", suite={"primary_metric": "accuracy",
                                                              "decision": {**POLICY, **(policy or {})}},
                   model={}, data={}, metrics={"accuracy": {"higher_is_better": True, "variant": "x"}},
                   environment={}, arms=arms, best_prompt_arm="few-shot")


def test_go_recommends_the_cheapest_arm_not_significantly_worse_than_the_best():
    arms = {"few-shot": _arm(0.50, trains=False),
            "full": _arm(0.82, [_cmp("few-shot", 0.32, 0.26, 0.38, 1e-20), _cmp("lora", -0.04, -0.08, -0.01, 0.01)],
                         seconds=200),
            "lora": _arm(0.86, [_cmp("few-shot", 0.36, 0.30, 0.42, 1e-25), _cmp("qlora", 0.01, -0.02, 0.03, 0.6)],
                         seconds=120),
            "qlora": _arm(0.85, [_cmp("few-shot", 0.35, 0.29, 0.41, 1e-24), _cmp("lora", -0.01, -0.03, 0.02, 0.6)],
                          seconds=100)}
    d = decide(_results(arms))
    assert d.verdict == "GO" and d.arm == "qlora" and d.prompt_arm == "few-shot"
    assert "not significantly worse than lora" in d.reasons[0]
    assert any("+0.360 [+0.300, +0.420]" in r for r in d.reasons)   # reasons cite the numbers


def test_on_a_cpu_the_cheapest_arm_is_the_one_with_the_least_cpu_time_not_wall_time():
    # lora ran on a loaded machine: its wall time is long, its CPU time is not.
    arms = {"few-shot": _arm(0.50, trains=False),
            "full": _arm(0.86, [_cmp("few-shot", 0.36, 0.30, 0.42, 1e-25), _cmp("lora", 0.0, -0.02, 0.02, 0.9)],
                         seconds=200),
            "lora": _arm(0.86, [_cmp("few-shot", 0.36, 0.30, 0.42, 1e-25), _cmp("full", 0.0, -0.02, 0.02, 0.9)],
                         seconds=900)}
    arms["full"].cost.train_cpu_seconds, arms["lora"].cost.train_cpu_seconds = 380.0, 150.0
    on_cpu = _results(arms)
    on_cpu.environment = {"accelerator": "cpu"}
    d = decide(on_cpu)
    assert d.arm == "lora" and any("150 s of CPU time training" in r for r in d.reasons)
    on_gpu = _results(arms)
    on_gpu.environment = {"accelerator": "cuda"}
    assert decide(on_gpu).arm == "full"           # the GPU's time is what the wall clock measures
    arms["lora"].cost.train_cpu_seconds = 0.0     # not recorded (an older run): wall time again
    assert decide(on_cpu).arm == "full"


def test_forgetting_vetoes_an_arm_and_no_go_keeps_prompting():
    forgets = Forgetting(metric="knowledge/accuracy", drop=0.08, relative=False, p_value=0.001)
    arms = {"few-shot": _arm(0.50, trains=False),
            "full": _arm(0.90, [_cmp("few-shot", 0.40, 0.33, 0.47, 1e-30)], seconds=50, forgetting=forgets),
            "lora": _arm(0.51, [_cmp("few-shot", 0.01, -0.01, 0.02, 0.5)], seconds=50)}
    d = decide(_results(arms))
    assert d.verdict == "NO-GO" and d.arm is None and d.prompt_arm == "few-shot"
    assert any("full forgets: knowledge/accuracy worse by 0.080 points" in r for r in d.reasons)
    assert any("lora" in r and "falls short of" in r for r in d.reasons)


def test_cost_limit_vetoes():
    arms = {"few-shot": _arm(0.50, trains=False),
            "full": _arm(0.90, [_cmp("few-shot", 0.40, 0.33, 0.47, 1e-30)], seconds=50, memory_gib=8)}
    d = decide(_results(arms, {"max_peak_memory_gb": 4}))
    assert d.verdict == "NO-GO" and any("8.0 GiB peak memory > 4" in r for r in d.reasons)


def test_straddling_interval_is_inconclusive_with_examples_needed():
    arms = {"few-shot": _arm(0.50, trains=False),
            "lora": _arm(0.56, [_cmp("few-shot", 0.06, 0.00, 0.12, 0.04, n=100)], n=100)}
    d = decide(_results(arms))
    assert d.verdict == "INCONCLUSIVE"
    # half-width 0.06 at n=100, distance to min_gain 0.03: n' = 100 * (0.06 / 0.03)^2 = 400
    assert d.needed_test_examples == 400 and "about 400 test examples (now 100)" in d.reasons[0]


def test_too_few_test_examples_is_inconclusive():
    arms = {"few-shot": _arm(0.5, trains=False, n=10),
            "lora": _arm(0.9, [_cmp("few-shot", 0.4, 0.2, 0.6, 0.01, n=10)], n=10)}
    d = decide(_results(arms))
    assert d.verdict == "INCONCLUSIVE" and "only 10 test examples" in d.reasons[0]


def test_lower_is_better_primary_metric_is_oriented():
    arms = {"few-shot": _arm(5.0, trains=False),
            "lora": _arm(3.0, [_cmp("few-shot", -2.0, -2.5, -1.5, 0.001)])}
    results = _results(arms, {"min_gain": 0.5})
    results.metrics["accuracy"]["higher_is_better"] = False
    assert decide(results).verdict == "GO"
