"""A realistic Results object and its samples files: test input for the report renderers.

Five arms on a 200-example sentiment test set (zero-shot and few-shot prompting; full, LoRA and
QLoRA fine-tuning) plus one failed arm, with intervals, paired comparisons, per-example changes,
general scores with forgetting, costs and loss curves. Some texts carry HTML/script payloads so
the tests can check they are shown as text and never run.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from harness.results import (ArmResult, Changes, Comparison, Cost, DataFile, Decision, Forgetting, General,
                             GeneralTask, MetricValue, Results)

SCRIPT = "<script>window.__pwned=1</script>"
BOLD = "<b>x</b>"
IMG = '<img src="x" onerror="window.__pwned=2">'
N = 200
METRICS = {"accuracy": (True, "label with the highest log-likelihood == gold label"),
           "macro_f1": (True, "macro F1 over the labels, from the log-likelihood label"),
           "exact_match": (True, "generated text, stripped and lower-cased, == target"),
           "perplexity": (False, "exp(mean target-token NLL), teacher forced")}
#               accuracy macro_f1 exact_match perplexity
SCORES = {"zero-shot": (0.715, 0.702, 0.640, 8.91),
          "few-shot": (0.800, 0.796, 0.765, 6.42),
          "full": (0.905, 0.904, 0.895, 1.38),
          "lora": (0.890, 0.889, 0.880, 1.51),
          "qlora": (0.875, 0.873, 0.860, 1.62)}
COSTS = {  # train s, train tokens, steps, peak bytes, trainable, artifact bytes, eval s
    "zero-shot": (0.0, 0, 0, 1_210_000_000, 0, 0, 14.2),
    "few-shot": (0.0, 0, 0, 1_380_000_000, 0, 0, 31.7),
    "full": (1843.4, 1_536_000, 120, 8_470_000_000, 134_515_008, 538_090_000, 15.1),
    "lora": (612.9, 1_536_000, 120, 2_950_000_000, 1_843_200, 7_390_000, 16.4),
    "qlora": (798.2, 1_536_000, 120, 1_720_000_000, 1_843_200, 7_390_000, 22.8),
}
GENERAL = {"mmlu-mini/accuracy": True, "wikitext/perplexity": False}
BASE_GENERAL = {"mmlu-mini/accuracy": 0.312, "wikitext/perplexity": 18.7}
GENERAL_DELTA = {"full": (-0.041, 0.003, 2.35, 0.001), "lora": (-0.006, 0.62, 0.21, 0.41),
                 "qlora": (-0.012, 0.31, 0.48, 0.08)}   # mmlu diff, p; wikitext diff, p
REVIEWS = ["The staff were wonderful and the room was spotless.", "Cold food and a rude waiter.",
           "Battery lasts two days, very happy with it.", "The sequel is a tired retread of the first film.",
           "Oh great, another update that deletes my notes.", "Not bad at all, I would buy it again.",
           "Delivery took three weeks and the box was crushed.", "A gripping read from the first page."]


def _mv(value: float, half: float, n: int = N) -> MetricValue:
    return MetricValue(value=value, n=n, ci_low=round(value - half, 4), ci_high=round(value + half, 4))


def _cmp(metric: str, against: str, diff: float, p: float, n: int = N) -> Comparison:
    binary = metric in ("accuracy", "exact_match", "mmlu-mini/accuracy")
    half = max(abs(diff) * 0.45, 0.02) if p < 0.05 else abs(diff) + 0.025
    return Comparison(metric=metric, against=against, difference=round(diff, 4), ci_low=round(diff - half, 4),
                      ci_high=round(diff + half, 4), p_value=p, n=n,
                      test="mcnemar-exact" if binary else "paired-bootstrap",
                      better=int(n * max(diff, 0) + 9) if binary else None,
                      worse=int(n * max(-diff, 0) + 9) if binary else None)


def _samples(rng: random.Random) -> dict[str, list[dict]]:
    """Per-arm rows; example 3 carries the payloads and is fixed by lora (few-shot gets it wrong)."""
    rows: dict[str, list[dict]] = {}
    for arm, scores in SCORES.items():
        arm_rows = []
        for i in range(N):
            target = "positive" if i % 2 == 0 else "negative"
            right = rng.random() < scores[0]
            if i == 3:
                right = arm != "few-shot"
            wrong = "negative" if target == "positive" else "positive"
            prompt = f"Review: {REVIEWS[i % len(REVIEWS)]}\nIs this review positive or negative?"
            prediction = target if right else wrong
            if i == 3:
                prompt = f"Review: I tried {SCRIPT} and {BOLD} on this site.\nIs this review positive or negative?"
                prediction = target if right else f"{wrong} {IMG} {SCRIPT}"
            arm_rows.append({"id": f"test-{i:04d}", "prompt": prompt, "target": target, "prediction": prediction,
                             "exact_match": float(right)})
        rows[arm] = arm_rows
    return rows


def _changes(rows: dict[str, list[dict]], arm: str, against: str) -> Changes:
    mine = {r["id"]: r["exact_match"] for r in rows[arm]}
    theirs = {r["id"]: r["exact_match"] for r in rows[against]}
    return Changes(against=against, metric="exact_match",
                   fixed=[i for i in mine if mine[i] and not theirs[i]],
                   broke=[i for i in mine if theirs[i] and not mine[i]])


def _loss_curve(rng: random.Random, floor: float, speed: float) -> list[tuple[int, float]]:
    return [(s, round(floor + 2.2 * math.exp(-s / speed) + rng.uniform(-0.06, 0.06), 4)) for s in range(1, 121, 2)]


def build_results(run_dir: Path, decision: bool = True, write_samples: bool = True) -> Results:
    """The Results of a finished five-arm run; samples go under run_dir/samples/ (if write_samples)."""
    rng = random.Random(0)
    rows = _samples(rng)
    if write_samples:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        for arm, arm_rows in rows.items():
            (run_dir / "samples" / f"{arm}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in arm_rows), encoding="utf-8")
    arms: dict[str, ArmResult] = {}
    for name, scores in SCORES.items():
        train_s, tokens, steps, peak, trainable, artifact, eval_s = COSTS[name]
        prompt = name in ("zero-shot", "few-shot")
        metrics = {m: _mv(v, 0.062 if m != "perplexity" else v * 0.08) for m, v in zip(METRICS, scores)}
        comparisons = []
        for against in ("zero-shot", "few-shot"):
            if against == name:
                continue
            for m, v, ref in zip(METRICS, scores, SCORES[against]):
                diff = v - ref
                comparisons.append(_cmp(m, against, diff, 0.0004 if abs(diff) > 0.07 else 0.021))
        arm = ArmResult(
            backend="prompt" if prompt else name, trains=not prompt, status="ok", metrics=metrics, comparisons=comparisons,
            options={"shots": 0 if name == "zero-shot" else 4} if prompt else
            {"max_steps": 120, "batch_size": 8, "grad_accum": 2, "learning_rate": 2e-5 if name == "full" else 5e-4},
            cost=Cost(train_seconds=train_s, train_cpu_seconds=0.0 if prompt else round(train_s * 1.9, 1),
                      train_tokens=tokens, train_target_tokens=tokens // 12, train_steps=steps,
                      peak_memory_bytes=peak, trainable_params=trainable, total_params=134_515_008,
                      artifact_bytes=artifact, eval_seconds=eval_s,
                      eval_tokens={"zero-shot": 38_400, "few-shot": 93_200}.get(name, 41_850)),
            samples=f"samples/{name}.jsonl")
        if not prompt:
            acc_d, acc_p, ppl_d, ppl_p = GENERAL_DELTA[name]
            arm.changes = _changes(rows, name, "few-shot")
            arm.loss_curve = _loss_curve(rng, {"full": 0.18, "lora": 0.24, "qlora": 0.27}[name],
                                         {"full": 14, "lora": 22, "qlora": 25}[name])
            arm.artifact = f"arms/{name}/adapter" if name != "full" else "arms/full/model"
            arm.general = {"mmlu-mini/accuracy": _mv(BASE_GENERAL["mmlu-mini/accuracy"] + acc_d, 0.028, 1000),
                           "wikitext/perplexity": _mv(BASE_GENERAL["wikitext/perplexity"] + ppl_d, 0.9, 500)}
            arm.forgetting = [_cmp("mmlu-mini/accuracy", "base", acc_d, acc_p, 1000),
                              _cmp("wikitext/perplexity", "base", ppl_d, ppl_p, 500)]
            significant = [(m, d) for m, d, p in (("mmlu-mini/accuracy", -acc_d, acc_p),
                                                  ("wikitext/perplexity", ppl_d / 18.7, ppl_p)) if p < 0.05]
            arm.forgetting_summary = (Forgetting(metric=significant[0][0], drop=round(significant[0][1], 4),
                                                 relative=significant[0][0].endswith("perplexity"), p_value=acc_p)
                                      if significant else Forgetting())
        arms[name] = arm
    arms["too-many-shots"] = ArmResult(backend="prompt", options={"shots": 50}, status="failed", exit_code=2,
                                       error=f"shots=50 but the train split has only 8 examples {SCRIPT}")
    return Results(
        harness_version="0.1.0", created="2025-05-14T09:31:07+00:00",
        suite={"name": "sentiment", "path": "suites/sentiment.yaml",
               "sha256": "3f9a1c0e5b7d2a8f4c6e1b9d0a7f3e5c2b8d4a6f1e9c7b3d5a0f2e8c6b4d1a7f",
               "task": {"kind": "classification", "labels": ["negative", "positive"]},
               "metrics": list(METRICS), "seed": 0},
        model={"ref": "builtin:smollm2-135m-instruct", "path": "/cache/harness/smollm2-135m-instruct",
               "train_dtype": "bfloat16"},
        data={"train": DataFile(source="data/sentiment/train.jsonl", examples=1600,
                                sha256="a1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff00"),
              "validation": DataFile(source="data/sentiment/validation.jsonl", examples=200,
                                     sha256="0f1e2d3c4b5a69788796a5b4c3d2e1f00ffeeddccbbaa99887766554433221100"),
              "test": DataFile(source="data/sentiment/test.jsonl", examples=N,
                               sha256="9d8c7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877665544")},
        metrics={m: {"higher_is_better": hib, "variant": variant} for m, (hib, variant) in METRICS.items()},
        environment={"python": "3.11.9", "platform": "Linux-6.8.0-x86_64-with-glibc2.36",
                     "device": "NVIDIA H100 80GB HBM3", "cpu_threads": 16, "train_dtype": "bfloat16",
                     "eval_dtype": "float32",
                     "versions": {"torch": "2.13.0", "transformers": "5.2.0", "peft": "0.17.1",
                                  "bitsandbytes": "0.48.1", "datasets": "3.6.0", "torchmetrics": "1.7.2"}},
        stats={"confidence": 0.95, "resamples": 2000, "seed": 0,
               "methods": {"interval": "percentile bootstrap", "binary": "mcnemar-exact",
                           "continuous": "paired-bootstrap"}},
        general=General(tasks={"mmlu-mini": GeneralTask(kind="multiple_choice", source="general/mmlu-mini.jsonl",
                                                        sha256="77aa" * 16, examples=1000),
                               "wikitext": GeneralTask(kind="perplexity", source="general/wikitext-500.jsonl",
                                                       sha256="5e5e" * 16, examples=500)},
                        metrics={m: {"higher_is_better": hib, "variant": "see task"} for m, hib in GENERAL.items()},
                        base={m: _mv(v, 0.028 if "accuracy" in m else 0.9, 1000 if "accuracy" in m else 500)
                              for m, v in BASE_GENERAL.items()},
                        base_samples="samples/base-general.jsonl"),
        arms=arms, best_prompt_arm="few-shot",
        decision=Decision(
            verdict="GO", arm="lora", prompt_arm="few-shot", needed_test_examples=None,
            reasons=["lora beats few-shot on accuracy by +0.090 [+0.050, +0.130] (McNemar exact, p<0.001), "
                     "above the required gain of 0.020",
                     "lora shows no significant forgetting (largest change mmlu-mini/accuracy −0.006, p=0.62)",
                     f"full scores higher (0.905) but forgets: mmlu-mini/accuracy −0.041 (p=0.003) {BOLD}"],
            policy={"metric": "accuracy", "min_gain": 0.02, "max_forgetting": 0.02, "confidence": 0.95,
                    "prefer": "cheapest"}) if decision else None)
