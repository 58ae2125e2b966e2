"""How suites/data/sentiment/{train,validation,test}.jsonl were made from the hand-written reviews.

Run once from the repository root with the raw parts in suites/data/sentiment/raw/ (not shipped:
the three split files are the data). Deterministic: stratified by (domain, label) with seed 0,
exact and near duplicates (word-set Jaccard >= 0.6) dropped before splitting.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).parent / "sentiment"
SIZES = {"test": 300, "validation": 100}   # the rest is train


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def dedupe(rows: list[dict]) -> list[dict]:
    kept, kept_words = [], []
    for row in rows:
        w = words(row["text"])
        if any(jaccard(w, other) >= 0.6 for other in kept_words):
            continue
        kept.append(row)
        kept_words.append(w)
    return kept


def main() -> None:
    rows = []
    for part in sorted((ROOT / "raw").glob("part_*.jsonl")):
        rows += [json.loads(line) for line in part.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = dedupe(rows)
    rng = random.Random(0)
    groups = defaultdict(list)
    for row in rows:
        groups[(row["domain"], row["label"])].append(row)
    splits = {"test": [], "validation": [], "train": []}
    for key in sorted(groups):
        group = groups[key]
        rng.shuffle(group)
        n_test = round(len(group) * SIZES["test"] / len(rows))
        n_val = math.ceil(len(group) * SIZES["validation"] / len(rows))
        splits["test"] += group[:n_test]
        splits["validation"] += group[n_test:n_test + n_val]
        splits["train"] += group[n_test + n_val:]
    for name, items in splits.items():
        rng.shuffle(items)
        with (ROOT / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for i, row in enumerate(items):
                record = {"id": f"{name}-{i:04d}", "text": row["text"], "label": row["label"],
                          "domain": row["domain"]}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(name, len(items))


if __name__ == "__main__":
    main()
