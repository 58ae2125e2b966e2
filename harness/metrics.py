"""The table of metrics: name, which task kinds it applies to, direction, and how to compute it.

Each metric is computed by exactly one implementation (a reference library where one exists),
from per-example rows produced by `harness.evaluate`. A metric is defined by two functions:

  stats(rows, labels) -> array (n, k)   per-example sufficient statistics
  score(stats) -> float                  the corpus value from the stats of any subset of rows

so that the bootstrap (harness/stats.py) resamples rows by resampling stats, and corpus-level
metrics (BLEU, chrF, macro-F1, perplexity) stay corpus-level under resampling. Mean metrics
(accuracy, exact match, token F1, ROUGE) have one statistic per example: the example's score.
Heavy libraries are imported inside the functions so that suite validation stays fast.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

_PUNCTUATION = set(string.punctuation)


def squad_normalize(text: str) -> str:
    """SQuAD v1.1 answer normalisation: lower-case, drop punctuation and articles, collapse spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, reference: str) -> float:
    return float(squad_normalize(prediction) == squad_normalize(reference))


def token_f1_score(prediction: str, reference: str) -> float:
    """SQuAD v1.1 token F1: bag-of-tokens overlap of the normalised strings."""
    pred, ref = squad_normalize(prediction).split(), squad_normalize(reference).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def references(row: dict) -> list[str]:
    """The gold answers of a row: its target plus any accepted aliases."""
    return [row["target"], *row.get("aliases", [])]


def _best_over_refs(score: Callable[[str, str], float]):
    return lambda row: max(score(row["prediction"], ref) for ref in references(row))


# -- mean metrics: one score per example ------------------------------------------------------------

def _mean_stats(per_example: Callable[[dict], float]):
    return lambda rows, labels: np.array([[per_example(r)] for r in rows], dtype=np.float64)


def _mean_score(stats: np.ndarray) -> float:
    return float(stats[:, 0].mean())


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)


def _rouge(kind: str):
    def per_example(row):
        # rougeLsum treats newlines as sentence breaks; predictions and targets keep theirs.
        scores = [_rouge_scorer().score(ref, row["prediction"])[kind].fmeasure for ref in references(row)]
        return max(scores)
    return per_example


# -- corpus metrics -----------------------------------------------------------------------------------

def _perplexity_stats(rows, labels):
    return np.array([[r["target_nll"], r["target_tokens"]] for r in rows], dtype=np.float64)


def _perplexity_score(stats):
    """Token-weighted: exp(total target NLL / total target tokens)."""
    return float(np.exp(stats[:, 0].sum() / stats[:, 1].sum()))


def _confusion_stats(rows, labels):
    """Per example, one-hot (true positive, false positive, false negative) for every label."""
    index = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(rows), 3 * len(labels)))
    for n, r in enumerate(rows):
        pred, gold = index[r["ll_prediction"]], index[r["label"]]
        if pred == gold:
            out[n, 3 * gold] = 1
        else:
            out[n, 3 * pred + 1] = 1
            out[n, 3 * gold + 2] = 1
    return out


def _macro_f1_score(stats):
    """Macro-F1 by torchmetrics' definition, from summed per-class counts (tested equal to it)."""
    import torch
    from torchmetrics.functional.classification.f_beta import _fbeta_reduce

    counts = torch.tensor(stats.sum(axis=0).reshape(-1, 3))
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    tn = counts.sum() - tp - fp - fn  # unused by F1; required by the reducer's signature
    return float(_fbeta_reduce(tp, fp, tn, fn, beta=1.0, average="macro", multidim_average="global"))


@lru_cache(maxsize=2)
def _sacrebleu_metric(name: str):
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU() if name == "bleu" else CHRF()


def _sacrebleu_stats(name: str):
    def stats(rows, labels):
        metric = _sacrebleu_metric(name)
        refs = [references(r) for r in rows]
        # sacrebleu takes one stream per reference position; None where a row has fewer references
        streams = [[r[i] if i < len(r) else None for r in refs] for i in range(max(map(len, refs)))]
        return np.array(metric._extract_corpus_statistics([r["prediction"] for r in rows], streams),
                        dtype=np.float64)
    return stats


def _sacrebleu_score(name: str):
    # sacrebleu's own corpus score from summed sentence statistics: the path its paired bootstrap uses.
    def score(stats):
        metric = _sacrebleu_metric(name)
        return float(metric._compute_score_from_stats(list(stats.sum(axis=0))).score)
    return score


@dataclass(frozen=True)
class Metric:
    name: str
    kinds: tuple[str, ...]
    higher_is_better: bool
    variant: str
    stats: Callable[[list[dict], tuple | None], np.ndarray]
    score: Callable[[np.ndarray], float]
    binary: bool = False        # per-example 0/1 scores: paired tests use McNemar's exact test
    per_example: bool = True    # one statistic per example, its own score; the metric is their mean

    def compute(self, rows: list[dict], labels=None) -> float:
        return self.score(self.stats(rows, labels))


def mean_metric(name, kinds, variant, per_example, binary=False):
    return Metric(name, kinds, True, variant, _mean_stats(per_example), _mean_score, binary=binary)


_CLS, _GEN, _BOTH = ("classification",), ("generation",), ("classification", "generation")

METRICS: dict[str, Metric] = {m.name: m for m in [
    mean_metric("accuracy", _CLS, "log-likelihood choice over the label set (target tokens + end of turn)",
          lambda r: float(r["ll_prediction"] == r["label"]), binary=True),
    Metric("macro_f1", _CLS, True, "macro-averaged F1 of the log-likelihood choice (torchmetrics)",
           _confusion_stats, _macro_f1_score, per_example=False),
    mean_metric("exact_match", _BOTH, "greedy generation vs target (or alias), SQuAD v1.1 normalisation",
          _best_over_refs(exact_match_score), binary=True),
    mean_metric("f1", _GEN, "SQuAD v1.1 token F1 of greedy generation vs target (best alias)",
          _best_over_refs(token_f1_score)),
    *[mean_metric(kind, _GEN, f"{kind} F-measure, rouge-score {'(newline-split sentences) ' * (kind == 'rougeLsum')}"
                        f"with Porter stemming, mean over examples", _rouge(kind))
      for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum")],
    Metric("bleu", _GEN, True, "sacrebleu corpus BLEU (13a tokenizer, exp smoothing), 0-100",
           _sacrebleu_stats("bleu"), _sacrebleu_score("bleu"), per_example=False),
    Metric("chrf", _GEN, True, "sacrebleu corpus chrF (char 6-grams, beta 2), 0-100",
           _sacrebleu_stats("chrf"), _sacrebleu_score("chrf"), per_example=False),
    Metric("perplexity", _BOTH, False,
           "exp(token-weighted NLL of target tokens incl. end of turn, given the prompt)",
           _perplexity_stats, _perplexity_score, per_example=False),
]}


def compute_all(names: list[str], rows: list[dict], labels) -> dict[str, float]:
    return {name: METRICS[name].compute(rows, labels) for name in names}


def per_example_scores(names: list[str], rows: list[dict], labels) -> list[dict[str, float]]:
    """Each row's own score for every mean metric (kept in samples/<arm>.jsonl for later pairing)."""
    columns = {n: METRICS[n].stats(rows, labels)[:, 0] for n in names if METRICS[n].per_example}
    return [{n: float(col[i]) for n, col in columns.items()} for i in range(len(rows))]
