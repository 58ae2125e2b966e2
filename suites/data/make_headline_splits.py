"""How suites/data/headline/{train,validation,test}.jsonl were made from hand-written paragraphs.

Run from the repository root; reads the raw parts suites/data/headline/raw/part-*.jsonl, each line
{"text", "headline", "topic"}. Every record is validated first (fields, topic, word counts,
headline style, headline words found in the text, exact and near-duplicate texts, duplicate
headlines); on any problem it lists them all, writes nothing and exits 1. Otherwise every row is
used: split stratified by topic in the proportions 340/60/170 (train/validation/test) with
random.Random(0), so the output is deterministic.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).parent / "headline"
TOPICS = {"local", "science", "business", "sports", "technology", "health", "culture", "weather",
          "education", "environment"}
TEXT_WORDS = (40, 90)
HEADLINE_WORDS = (5, 12)
SIZES = {"test": 170, "validation": 60, "train": 340}   # proportions; every valid row is used
NEAR_DUPLICATE = 0.6    # word-set Jaccard of two texts at or above this is a near duplicate
MIN_OVERLAP = 0.5       # share of headline words that must also occur in the text


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def words(text: str) -> set[str]:
    return set(normalise(text).split())


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def allocate(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """Split total across topics in proportion to their sizes (largest remainder, ties by name)."""
    n = sum(sizes.values())
    quota = {t: total * size / n for t, size in sizes.items()}
    counts = {t: int(q) for t, q in quota.items()}
    for t in sorted(quota, key=lambda t: (counts[t] - quota[t], t))[:total - sum(counts.values())]:
        counts[t] += 1
    return counts


def check(row: dict, where: str) -> list[str]:
    if set(row) != {"text", "headline", "topic"}:
        return [f"{where}: fields are {sorted(row)}, want headline, text, topic"]
    if not all(isinstance(row[k], str) and row[k].strip() for k in row):
        return [f"{where}: empty or non-string field"]
    errors = []
    text, headline = row["text"], row["headline"]
    if row["topic"] not in TOPICS:
        errors.append(f"{where}: unknown topic {row['topic']!r}")
    n = len(text.split())
    if not TEXT_WORDS[0] <= n <= TEXT_WORDS[1]:
        errors.append(f"{where}: text has {n} words")
    n = len(headline.split())
    if not HEADLINE_WORDS[0] <= n <= HEADLINE_WORDS[1]:
        errors.append(f"{where}: headline has {n} words")
    if headline != headline.strip() or "\n" in headline or "\n" in text:
        errors.append(f"{where}: stray whitespace or line break")
    if headline.endswith("."):
        errors.append(f"{where}: headline ends with a period")
    if not headline[0].isupper() and not headline[0].isdigit():
        errors.append(f"{where}: headline does not start with a capital")
    head = normalise(headline).split()
    overlap = sum(w in words(text) for w in head) / max(1, len(head))
    if overlap < MIN_OVERLAP:
        errors.append(f"{where}: only {overlap:.0%} of the headline's words are in the text")
    return errors


def main() -> None:
    rows, errors = [], []
    for part in sorted((ROOT / "raw").glob("part-*.jsonl")):
        for i, line in enumerate(part.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{part.name}:{i}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"{where}: {exc}")
                continue
            problems = check(row, where) if isinstance(row, dict) else [f"{where}: not an object"]
            errors += problems
            if not problems:
                rows.append((where, row))
    seen_text, seen_head, kept_words = {}, {}, []
    for where, row in rows:
        t, h = normalise(row["text"]), normalise(row["headline"])
        if t in seen_text:
            errors.append(f"{where}: text duplicates {seen_text[t]}")
            continue
        if h in seen_head:
            errors.append(f"{where}: headline duplicates {seen_head[h]}")
        seen_text.setdefault(t, where)
        seen_head.setdefault(h, where)
        w = words(row["text"])
        for other_where, other in kept_words:
            if jaccard(w, other) >= NEAR_DUPLICATE:
                errors.append(f"{where}: text is a near duplicate of {other_where}")
        kept_words.append((where, w))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        print(f"{len(errors)} validation problem(s); nothing written", file=sys.stderr)
        sys.exit(1)

    rng = random.Random(0)
    groups = defaultdict(list)
    for _, row in rows:
        groups[row["topic"]].append(row)
    topics = sorted(groups)
    for topic in topics:
        rng.shuffle(groups[topic])
    sizes = {t: len(groups[t]) for t in topics}
    n_test = allocate(round(len(rows) * SIZES["test"] / sum(SIZES.values())), sizes)
    n_val = allocate(round(len(rows) * SIZES["validation"] / sum(SIZES.values())), sizes)
    splits = {"test": [], "validation": [], "train": []}
    for topic in topics:
        group, a, b = groups[topic], n_test[topic], n_test[topic] + n_val[topic]
        splits["test"] += group[:a]
        splits["validation"] += group[a:b]
        splits["train"] += group[b:]
    for name, items in splits.items():
        rng.shuffle(items)
        with (ROOT / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for i, row in enumerate(items):
                record = {"id": f"{name}-{i:04d}", "text": row["text"], "headline": row["headline"],
                          "topic": row["topic"]}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        topics = Counter(row["topic"] for row in items)
        print(name, len(items), " ".join(f"{t}={topics[t]}" for t in sorted(topics)))


if __name__ == "__main__":
    main()
