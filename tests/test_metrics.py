"""Metrics against the values their reference tools publish, and the statistics' analytic cases."""

from __future__ import annotations

import numpy as np
import pytest

from harness.metrics import METRICS, exact_match_score, squad_normalize, token_f1_score
from harness.stats import StatsConfig, interval, mcnemar_exact, paired

# sacrebleu's README example (two reference streams); it publishes BLEU = 48.53 and chrF2 = 59.73.
README_HYPS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
README_REFS = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
               ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]


def _gen_rows(hyps, refs, aliases=None):
    return [{"id": str(i), "prediction": h, "target": r, "aliases": list(a) if a else []}
            for i, (h, r, a) in enumerate(zip(hyps, refs, aliases or [None] * len(hyps)))]


def test_bleu_and_chrf_reproduce_sacrebleu_readme_values():
    rows = _gen_rows(README_HYPS, README_REFS[0], [[r] for r in README_REFS[1]])
    assert METRICS["bleu"].compute(rows) == pytest.approx(48.53, abs=0.005)
    assert METRICS["chrf"].compute(rows) == pytest.approx(59.73, abs=0.005)


def test_corpus_metrics_on_a_subset_equal_sacrebleu_on_that_subset():
    """Resampling uses summed sentence statistics: it must equal sacrebleu on the resampled corpus."""
    import sacrebleu

    hyps = ["the cat sat on the mat", "a dog ran", "hello world again", "it rains in spring", "no"]
    refs = ["the cat is on the mat", "the dog ran away", "hello world", "in spring it rains", "yes"]
    rows = _gen_rows(hyps, refs)
    pick = [0, 0, 2, 3, 4, 4]
    for name, ref_fn in [("bleu", sacrebleu.corpus_bleu), ("chrf", sacrebleu.corpus_chrf)]:
        stats = METRICS[name].stats(rows, None)
        expected = ref_fn([hyps[i] for i in pick], [[refs[i] for i in pick]]).score
        assert METRICS[name].score(stats[pick]) == pytest.approx(expected, abs=1e-9)


def test_rouge_matches_rouge_score_published_cases():
    # rouge-score's own tests: target "testing one two", prediction "testing" -> ROUGE-1 F = 0.5;
    # prediction "testing two" -> LCS 2 of 3: ROUGE-L F = 0.8; ROUGE-2 F = 0 (no shared bigram).
    rows = _gen_rows(["testing", "testing two"], ["testing one two", "testing one two"])
    assert METRICS["rouge1"].stats(rows, None)[:, 0].tolist() == pytest.approx([0.5, 0.8])
    assert METRICS["rougeL"].stats(rows, None)[:, 0].tolist() == pytest.approx([0.5, 0.8])
    assert METRICS["rouge2"].stats(rows, None)[:, 0].tolist() == pytest.approx([0.0, 0.0])
    # stemming is on: "runs" and "running" both stem to "run"
    assert METRICS["rouge1"].compute(_gen_rows(["he runs"], ["he running"])) == pytest.approx(1.0)


@pytest.mark.parametrize("prediction, reference, em, f1", [
    ("The Eiffel Tower!", "eiffel tower", 1.0, 1.0),       # case, punctuation and the article go
    ("Eiffel", "the Eiffel Tower", 0.0, 2 / 3),             # P = 1, R = 1/2
    ("in 1889 in Paris", "1889", 0.0, 0.4),                 # P = 1/4, R = 1: F1 = 0.4
    ("an apple", "apple", 1.0, 1.0),
    ("", "apple", 0.0, 0.0),
])
def test_squad_v11_exact_match_and_f1(prediction, reference, em, f1):
    assert exact_match_score(prediction, reference) == em
    assert token_f1_score(prediction, reference) == pytest.approx(f1)


def test_squad_normalisation():
    assert squad_normalize("  The  Quick, brown fox. ") == "quick brown fox"


def test_exact_match_accepts_aliases():
    rows = _gen_rows(["eight", "9", "seven"], ["8", "9", "8"], [["eight"], [], ["eight"]])
    assert METRICS["exact_match"].compute(rows) == pytest.approx(2 / 3)


def test_mcnemar_exact_known_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)        # binomial tail, doubled
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)


def _cls_rows(correct):
    return [{"id": str(i), "ll_prediction": "a" if c else "b", "label": "a"} for i, c in enumerate(correct)]


def test_an_arm_against_itself_differs_by_zero_with_p_one():
    rng = np.random.default_rng(1)
    correct = rng.random(50) < 0.6
    rows = _cls_rows(correct)
    acc = METRICS["accuracy"]
    out = paired(acc, acc.stats(rows, ("a", "b")), acc.stats(rows, ("a", "b")), StatsConfig())
    assert out["difference"] == 0 and out["p_value"] == 1 and out["test"] == "mcnemar-exact"
    gen = _gen_rows(["a b c"] * 20, ["a b d"] * 20)
    rouge = METRICS["rougeL"]
    out = paired(rouge, rouge.stats(gen, None), rouge.stats(gen, None), StatsConfig())
    assert out["difference"] == 0 and out["p_value"] == 1 and out["ci_low"] == out["ci_high"] == 0


def test_clear_difference_is_significant_and_interval_is_seeded():
    better, worse = _cls_rows([True] * 45 + [False] * 5), _cls_rows([True] * 20 + [False] * 30)
    acc = METRICS["accuracy"]
    a, b = acc.stats(better, ("a", "b")), acc.stats(worse, ("a", "b"))
    out = paired(acc, a, b, StatsConfig())
    assert out["difference"] == pytest.approx(0.5) and out["p_value"] < 1e-6
    assert out["better"] == 25 and out["worse"] == 0 and 0.35 < out["ci_low"] < 0.5 < out["ci_high"]
    first, again = interval(acc, a, StatsConfig(seed=3)), interval(acc, a, StatsConfig(seed=3))
    assert first == again and first["ci_low"] < 0.9 < first["ci_high"] and first["n"] == 50


def test_bootstrap_interval_covers_the_truth_at_about_the_nominal_rate():
    """200 samples of 100 Bernoulli(0.7) draws: the 95% interval holds 0.7 in roughly 95% of them."""
    rng = np.random.default_rng(0)
    acc, hits = METRICS["accuracy"], 0
    for trial in range(200):
        stats = acc.stats(_cls_rows(rng.random(100) < 0.7), ("a", "b"))
        out = interval(acc, stats, StatsConfig(resamples=500, seed=trial))
        hits += out["ci_low"] <= 0.7 <= out["ci_high"]
    assert 0.88 <= hits / 200 <= 0.99


def test_macro_f1_from_statistics_equals_torchmetrics():
    import torch
    from torchmetrics.functional.classification import multiclass_f1_score

    rng = np.random.default_rng(0)
    labels = ("x", "y", "z")
    for _ in range(5):
        gold, pred = rng.integers(0, 3, 40), rng.integers(0, 2, 40)   # class z never predicted
        rows = [{"ll_prediction": labels[p], "label": labels[g]} for p, g in zip(pred, gold)]
        expected = float(multiclass_f1_score(torch.tensor(pred), torch.tensor(gold), num_classes=3,
                                             average="macro"))
        assert METRICS["macro_f1"].compute(rows, labels) == pytest.approx(expected, abs=1e-6)


def test_perplexity_is_token_weighted():
    rows = [{"target_nll": 2.0, "target_tokens": 1}, {"target_nll": 6.0, "target_tokens": 3}]
    assert METRICS["perplexity"].compute(rows) == pytest.approx(np.exp(8.0 / 4))


WORDS = "storm city river council market school train bridge farmers record".split()


def _seeded_arm(targets, difficulty, seed):
    """An 'arm' whose output depends only on each example's difficulty and the arm's seed: each
    target word is kept with probability 1 - difficulty, else replaced by a random word."""
    rng = np.random.default_rng(seed)
    return [" ".join(w if rng.random() > d else WORDS[rng.integers(len(WORDS))] for w in t.split())
            for t, d in zip(targets, difficulty)]


@pytest.mark.parametrize("metric", ["accuracy", "rougeL", "chrf"])
def test_a_a_two_seeds_with_no_real_effect_are_rarely_significant(metric):
    """A/A check: two arms that differ only in seed, on the same examples, with no real effect.
    At 95% confidence the paired test may call them different in about 5% of trials, not more."""
    rng = np.random.default_rng(123)
    trials, n, hits = 200, 60, 0
    for trial in range(trials):
        difficulty = rng.uniform(0.05, 0.9, n)                 # examples differ a lot; arms do not
        if metric == "accuracy":
            a = _cls_rows(rng.random(n) > difficulty)
            b = _cls_rows(rng.random(n) > difficulty)
            labels = ("a", "b")
        else:
            targets = [" ".join(rng.choice(WORDS, 6)) for _ in range(n)]
            a = _gen_rows(_seeded_arm(targets, difficulty, 2 * trial), targets)
            b = _gen_rows(_seeded_arm(targets, difficulty, 2 * trial + 1), targets)
            labels = None
        m = METRICS[metric]
        out = paired(m, m.stats(a, labels), m.stats(b, labels), StatsConfig(resamples=1000, seed=trial))
        hits += out["p_value"] < 0.05
    assert hits / trials <= 0.08, hits
