"""The shipped suites' data: sizes, no example in two splits, and the general set's balance."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from harness.data import load_data
from harness.suite import load_suite

SUITES = Path(__file__).resolve().parents[1] / "suites"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@pytest.mark.parametrize("suite, key", [("headline", "text"), ("qa", "context")])
def test_generation_suites_have_the_sizes_and_no_shared_examples(suite, key):
    loaded = load_suite(SUITES / f"{suite}.yaml")
    data = load_data(loaded)
    assert len(data.train) >= 300 and len(data.validation) >= 50 and len(data.test) >= 150
    seen = {}
    for split in ("train", "validation", "test"):
        for row in _rows(SUITES / "data" / suite / f"{split}.jsonl"):
            seen.setdefault(_norm(row[key]), set()).add(split)
    assert all(len(splits) == 1 for splits in seen.values())


def test_qa_answers_are_spans_of_their_passage():
    for split in ("train", "validation", "test"):
        for row in _rows(SUITES / "data" / "qa" / f"{split}.jsonl"):
            assert row["answer"] in row["context"], row["id"]


def test_general_set_sizes_and_balanced_answer_positions():
    mc = _rows(SUITES / "general" / "mc.jsonl")
    assert len(mc) >= 300 and len({_norm(r["question"]) for r in mc}) == len(mc)
    assert set(Counter(r["answer"] for r in mc).values()) == {len(mc) // 4}
    assert {r["category"] for r in mc} == {"science", "geography", "history", "arithmetic", "commonsense",
                                           "language"}
    assert len(_rows(SUITES / "general" / "short_answer.jsonl")) >= 103        # 3 exemplars + 100 scored
    assert len(_rows(SUITES / "general" / "paragraphs.jsonl")) >= 100
