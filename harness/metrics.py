"""The table of metrics: name, which task kinds it applies to, direction, and how to compute it.

Each metric is computed by exactly one function here, from per-example rows produced by
`harness.evaluate`. Heavy libraries (torch, torchmetrics) are imported inside the functions so
that suite validation stays fast.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Callable


def squad_normalize(text: str) -> str:
    """SQuAD v1.1 answer normalisation: lower-case, drop punctuation and articles, collapse spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, reference: str) -> float:
    return float(squad_normalize(prediction) == squad_normalize(reference))


def _label_indices(rows, labels):
    index = {label: i for i, label in enumerate(labels)}
    preds = [index[r["ll_prediction"]] for r in rows]
    golds = [index[r["label"]] for r in rows]
    return preds, golds


def _accuracy(rows, labels):
    import torch
    from torchmetrics.functional.classification import multiclass_accuracy

    preds, golds = _label_indices(rows, labels)
    return float(multiclass_accuracy(torch.tensor(preds), torch.tensor(golds),
                                     num_classes=len(labels), average="micro"))


def _macro_f1(rows, labels):
    import torch
    from torchmetrics.functional.classification import multiclass_f1_score

    preds, golds = _label_indices(rows, labels)
    return float(multiclass_f1_score(torch.tensor(preds), torch.tensor(golds),
                                     num_classes=len(labels), average="macro"))


def _exact_match(rows, labels):
    return sum(r["exact_match"] for r in rows) / len(rows)


def _perplexity(rows, labels):
    """Token-weighted: exp(total target NLL / total target tokens)."""
    nll = sum(r["target_nll"] for r in rows)
    tokens = sum(r["target_tokens"] for r in rows)
    return math.exp(nll / tokens)


@dataclass(frozen=True)
class Metric:
    name: str
    kinds: tuple[str, ...]
    higher_is_better: bool
    variant: str
    compute: Callable


METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("accuracy", ("classification",), True,
           "log-likelihood choice over the label set (target tokens + end of turn)", _accuracy),
    Metric("macro_f1", ("classification",), True,
           "macro-averaged F1 of the log-likelihood choice (torchmetrics)", _macro_f1),
    Metric("exact_match", ("classification", "generation"), True,
           "greedy generation vs target, SQuAD v1.1 normalisation", _exact_match),
    Metric("perplexity", ("classification", "generation"), False,
           "exp(token-weighted NLL of target tokens incl. end of turn, given the prompt)", _perplexity),
]}


def compute_all(names: list[str], rows: list[dict], labels: list[str] | None) -> dict[str, float]:
    return {name: METRICS[name].compute(rows, labels) for name in names}
