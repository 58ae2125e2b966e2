"""Uncertainty: bootstrap confidence intervals and paired tests between two arms.

Methods (also in the README):
- Interval of a metric: percentile bootstrap over examples, `resamples` resamples (default 1000),
  seeded. A resample draws n examples with replacement and recomputes the metric from their
  statistics (harness/metrics.py), so corpus metrics (BLEU, chrF, macro-F1, perplexity) are
  recomputed at the corpus level, never averaged per sentence.
- Paired comparison of arms A and B on the same examples: the difference A - B; its interval by
  the paired bootstrap (the same resampled examples for both arms); its two-sided p-value by
  McNemar's exact test for 0/1 metrics (accuracy, exact match) and otherwise by the paired
  bootstrap test of no difference: p = (1 + #{|d_b - d| >= |d|}) / (1 + B), d_b the resampled
  differences, d the observed one (the shift method; an arm against itself gives p = 1).
All arms of a run share the same resampled indices (same seed, same n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.metrics import Metric


@dataclass(frozen=True)
class StatsConfig:
    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0

    def describe(self) -> dict:
        return {"confidence": self.confidence, "resamples": self.resamples, "seed": self.seed,
                "interval": "percentile bootstrap over examples (corpus metrics recomputed per resample)",
                "paired_test": "McNemar exact (0/1 metrics), else paired bootstrap shift test",
                "paired_interval": "paired bootstrap percentile interval of the difference"}


def resample_indices(n: int, config: StatsConfig) -> np.ndarray:
    """(resamples, n) example indices drawn with replacement; the same for every arm of a run."""
    rng = np.random.default_rng(config.seed)
    return rng.integers(0, n, size=(config.resamples, n))


def resampled_scores(metric: Metric, stats: np.ndarray, indices: np.ndarray) -> np.ndarray:
    if metric.per_example:      # a mean of per-example scores: vectorised
        return stats[:, 0][indices].mean(axis=1)
    return np.array([metric.score(stats[row]) for row in indices])


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def interval(metric: Metric, stats: np.ndarray, config: StatsConfig) -> dict:
    """The metric's value over all examples, n, and its bootstrap interval."""
    value = metric.score(stats)
    low, high = _percentiles(resampled_scores(metric, stats, resample_indices(len(stats), config)),
                             config.confidence)
    return {"value": value, "n": len(stats), "ci_low": low, "ci_high": high}


def mcnemar_exact(better: int, worse: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts (binomial, p = 1/2)."""
    total = better + worse
    if total == 0:
        return 1.0
    tail = sum(math.comb(total, k) for k in range(min(better, worse) + 1)) / 2 ** total
    return min(1.0, 2 * tail)


def paired(metric: Metric, stats_a: np.ndarray, stats_b: np.ndarray, config: StatsConfig) -> dict:
    """Compare arm A with arm B on the same examples (rows aligned)."""
    if stats_a.shape[0] != stats_b.shape[0]:
        raise ValueError(f"paired comparison needs the same examples ({len(stats_a)} vs {len(stats_b)})")
    indices = resample_indices(len(stats_a), config)
    observed = metric.score(stats_a) - metric.score(stats_b)
    deltas = resampled_scores(metric, stats_a, indices) - resampled_scores(metric, stats_b, indices)
    low, high = _percentiles(deltas, config.confidence)
    out = {"difference": observed, "ci_low": low, "ci_high": high, "n": len(stats_a)}
    if metric.binary:
        a, b = stats_a[:, 0] > 0.5, stats_b[:, 0] > 0.5
        better, worse = int((a & ~b).sum()), int((~a & b).sum())
        out.update(p_value=mcnemar_exact(better, worse), test="mcnemar-exact", better=better, worse=worse)
    else:
        extreme = np.abs(deltas - observed) >= abs(observed) - 1e-12
        out.update(p_value=float((1 + extreme.sum()) / (1 + len(deltas))), test="paired-bootstrap")
    return out


def examples_to_resolve(half_width: float, distance: float, n: int) -> int | None:
    """Roughly how many examples would shrink an interval of `half_width` (at n) below `distance`.

    Interval widths scale as 1/sqrt(n): n' = n * (half_width / distance)^2.
    """
    if distance <= 0:
        return None
    return int(math.ceil(n * (half_width / distance) ** 2))
