"""How suites/data/qa/{train,validation,test}.jsonl were made from the hand-written passages.

Run from the repository root with the raw parts in suites/data/qa/raw/part-*.jsonl. Every record
is validated first (fields, answer an exact 1-5 word substring of a 40-100 word passage, question
ending in '?', known topic, at most two questions per passage with different answers); exact
duplicate (context, question) pairs and near-duplicate passages (same normalised text, or word-set
Jaccard >= 0.6) are errors. Any problem is printed and the script exits with status 1 without
writing anything. Otherwise records are grouped by passage, the groups are shuffled with seed 0
and dealt whole into test (30%), validation (10%) and train (the rest), so no passage appears in
two splits. Deterministic.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import string
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).parent / "qa"
FIELDS = ("context", "question", "answer", "topic")
TOPICS = {"people", "places", "companies", "events", "science", "history", "food", "sports",
          "travel", "arts", "nature", "technology", "health", "education"}
CONTEXT_WORDS = (40, 100)
ANSWER_WORDS = (1, 5)
MAX_QUESTIONS_PER_CONTEXT = 2
FRACTIONS = {"test": 0.3, "validation": 0.1}        # the rest is train
MINIMUM = {"train": 330, "validation": 55, "test": 165}
NEAR_DUPLICATE = 0.6
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "‘’“”–—"})


def normalise(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCT).split())


def words(text: str) -> frozenset[str]:
    return frozenset(normalise(text).split())


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def load() -> tuple[list[dict], list[str]]:
    rows, errors = [], []
    parts = sorted((ROOT / "raw").glob("part-*.jsonl"))
    if not parts:
        errors.append(f"no raw parts in {ROOT / 'raw'}")
    for part in parts:
        for n, line in enumerate(part.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{part.name}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"{where}: bad JSON ({exc})")
                continue
            problem = check(row)
            if problem:
                errors.append(f"{where}: {problem}")
            else:
                rows.append({**row, "_where": where})
    return rows, errors


def check(row: object) -> str | None:
    if not isinstance(row, dict) or set(row) != set(FIELDS):
        return f"fields must be exactly {FIELDS}"
    if not all(isinstance(row[f], str) and row[f].strip() == row[f] and row[f] for f in FIELDS):
        return "every field must be a non-empty string without surrounding whitespace"
    n_context = len(row["context"].split())
    if not CONTEXT_WORDS[0] <= n_context <= CONTEXT_WORDS[1]:
        return f"passage has {n_context} words, outside {CONTEXT_WORDS}"
    n_answer = len(row["answer"].split())
    if not ANSWER_WORDS[0] <= n_answer <= ANSWER_WORDS[1]:
        return f"answer has {n_answer} words, outside {ANSWER_WORDS}"
    if row["answer"] not in row["context"]:
        return f"answer {row['answer']!r} is not a substring of the passage"
    if not row["question"].endswith("?"):
        return "question does not end with '?'"
    if row["topic"] not in TOPICS:
        return f"unknown topic {row['topic']!r}"
    return None


def group(rows: list[dict]) -> tuple[dict[str, list[dict]], list[str]]:
    errors, seen = [], {}
    groups = defaultdict(list)
    for row in rows:
        key = (normalise(row["context"]), normalise(row["question"]))
        if key in seen:
            errors.append(f"{row['_where']}: duplicate (context, question) of {seen[key]}")
            continue
        seen[key] = row["_where"]
        groups[row["context"]].append(row)
    for context, items in groups.items():
        where = items[0]["_where"]
        if len(items) > MAX_QUESTIONS_PER_CONTEXT:
            errors.append(f"{where}: passage used for {len(items)} questions (max {MAX_QUESTIONS_PER_CONTEXT})")
        if len({normalise(r["answer"]) for r in items}) < len(items):
            errors.append(f"{where}: two questions on one passage share an answer")
        if len({r["topic"] for r in items}) > 1:
            errors.append(f"{where}: one passage with different topics")
    keyed = [(items[0]["_where"], words(context), normalise(context)) for context, items in groups.items()]
    for (wa, sa, na), (wb, sb, nb) in itertools.combinations(keyed, 2):
        if na == nb or jaccard(sa, sb) >= NEAR_DUPLICATE:
            errors.append(f"{wb}: passage is a near duplicate of {wa} (Jaccard {jaccard(sa, sb):.2f})")
    return groups, errors


def split(groups: dict[str, list[dict]]) -> dict[str, list[dict]]:
    keys = sorted(groups)
    rng = random.Random(0)
    rng.shuffle(keys)
    total = sum(len(items) for items in groups.values())
    targets = {name: math.ceil(total * share) for name, share in FRACTIONS.items()}
    splits = {"test": [], "validation": [], "train": []}
    for key in keys:
        name = next((n for n in ("test", "validation") if len(splits[n]) < targets[n]), "train")
        splits[name] += groups[key]
    for items in splits.values():
        rng.shuffle(items)
    return splits


def main() -> int:
    rows, errors = load()
    groups, group_errors = group(rows)
    errors += group_errors
    splits = split(groups) if not errors else {}
    for name, items in splits.items():
        if len(items) < MINIMUM[name]:
            errors.append(f"{name} has {len(items)} examples, fewer than {MINIMUM[name]}")
    if errors:
        for error in errors:
            print("error:", error, file=sys.stderr)
        print(f"{len(errors)} problem(s); nothing written", file=sys.stderr)
        return 1
    contexts = {name: {r["context"] for r in items} for name, items in splits.items()}
    assert all(not (contexts[a] & contexts[b]) for a, b in itertools.combinations(contexts, 2))
    for name, items in splits.items():
        with (ROOT / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for i, row in enumerate(items):
                record = {"id": f"{name}-{i:04d}", **{f: row[f] for f in FIELDS}}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(name, len(items), "examples,", len(contexts[name]), "passages")
    topics = Counter(r["topic"] for items in splits.values() for r in items)
    print("topics:", ", ".join(f"{t} {n}" for t, n in sorted(topics.items(), key=lambda kv: (-kv[1], kv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
