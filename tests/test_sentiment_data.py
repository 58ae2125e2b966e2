"""The shipped sentiment data: sizes, balance, variety, and no (near-)duplicates across splits."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "suites" / "data" / "sentiment"
MINIMUM = {"train": 600, "validation": 100, "test": 300}
DOMAINS = {"products", "films", "restaurants", "hotels", "apps", "books", "services"}


def load(split):
    return [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def words(text):
    return frozenset(re.findall(r"[a-z']+", text.lower()))


@pytest.mark.parametrize("split", list(MINIMUM))
def test_sizes_balance_and_domains(split):
    rows = load(split)
    assert len(rows) >= MINIMUM[split]
    labels = Counter(r["label"] for r in rows)
    assert set(labels) == {"negative", "positive"} and abs(labels["negative"] - labels["positive"]) <= 2
    assert {r["domain"] for r in rows} == DOMAINS
    lengths = [len(r["text"].split()) for r in rows]
    assert min(lengths) <= 6 and max(lengths) >= 60, "lengths must vary"


def test_no_exact_or_near_duplicates_across_splits():
    splits = {s: [(r["id"], words(r["text"])) for r in load(s)] for s in MINIMUM}
    texts = [r["text"].strip().lower() for s in MINIMUM for r in load(s)]
    assert len(texts) == len(set(texts)), "exact duplicate texts"
    for a, b in itertools.combinations(MINIMUM, 2):
        for (ida, wa), (idb, wb) in itertools.product(splits[a], splits[b]):
            overlap = len(wa & wb) / len(wa | wb)
            assert overlap < 0.6, f"near-duplicates {ida} / {idb} ({overlap:.2f})"
