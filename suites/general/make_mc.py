"""Build suites/general/mc.jsonl from the hand-written items in suites/general/raw_mc/.

Stdlib only and deterministic (seed 0). Run from anywhere:

    python suites/general/make_mc.py

Each raw file raw_mc/<category>.jsonl holds lines
    {"question": ..., "choices": [four strings], "answer": <index 0-3>, "category": <category>}
with the correct answer at any position. This script validates every item, then moves each
correct choice to a target position (distractors keep their relative order) so that the correct
positions are exactly balanced over A-D overall (when the total is a multiple of 4) and within
one of balanced inside each category. It writes mc.jsonl with lines
    {"id": "mc-0000", "category": ..., "question": ..., "choices": [...], "answer": <index>}
prints counts per category and per answer position, and exits non-zero on any validation problem.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
RAW_DIR = HERE / "raw_mc"
OUT = HERE / "mc.jsonl"
CATEGORIES = ["science", "geography", "history", "arithmetic", "commonsense", "language"]
N_CHOICES = 4
MAX_CHOICE_WORDS = 8
SEED = 0
KEYS = {"question", "choices", "answer", "category"}


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: for duplicate checks."""
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(text.split())


def validate(item: object, where: str, category: str) -> list[str]:
    if not isinstance(item, dict):
        return [f"{where}: not a JSON object"]
    errors = []
    if set(item) != KEYS:
        errors.append(f"{where}: keys {sorted(item)} != {sorted(KEYS)}")
    question = item.get("question")
    choices = item.get("choices")
    answer = item.get("answer")
    if not isinstance(question, str) or not question.strip():
        errors.append(f"{where}: question must be a non-empty string")
    if item.get("category") != category:
        errors.append(f"{where}: category {item.get('category')!r} != file category {category!r}")
    if not isinstance(choices, list) or len(choices) != N_CHOICES:
        errors.append(f"{where}: choices must be a list of {N_CHOICES}")
        return errors
    if not all(isinstance(c, str) and c.strip() for c in choices):
        errors.append(f"{where}: every choice must be a non-empty string")
        return errors
    if any(c != c.strip() for c in choices):
        errors.append(f"{where}: choice with leading/trailing whitespace")
    if len({normalise(c) for c in choices}) != N_CHOICES:
        errors.append(f"{where}: choices not distinct: {choices}")
    for c in choices:
        if len(c.split()) > MAX_CHOICE_WORDS:
            errors.append(f"{where}: choice longer than {MAX_CHOICE_WORDS} words: {c!r}")
    if type(answer) is not int or not 0 <= answer < N_CHOICES:
        errors.append(f"{where}: answer must be an int in 0..{N_CHOICES - 1}, got {answer!r}")
    return errors


def load() -> tuple[dict[str, list[dict]], list[str]]:
    items: dict[str, list[dict]] = {}
    errors: list[str] = []
    for category in CATEGORIES:
        path = RAW_DIR / f"{category}.jsonl"
        if not path.exists():
            errors.append(f"{path}: missing")
            items[category] = []
            continue
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path.name}:{lineno}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"{where}: invalid JSON ({exc})")
                continue
            item_errors = validate(item, where, category)
            errors.extend(item_errors)
            if not item_errors:
                rows.append(item)
        items[category] = rows
    extra = sorted(p.name for p in RAW_DIR.glob("*.jsonl") if p.stem not in CATEGORIES)
    if extra:
        errors.append(f"{RAW_DIR}: unexpected files {extra}")
    seen: dict[str, str] = {}
    for category in CATEGORIES:
        for i, item in enumerate(items[category]):
            key = normalise(item["question"])
            here = f"{category}[{i}]"
            if key in seen:
                errors.append(f"{here}: duplicate question of {seen[key]}: {item['question']!r}")
            else:
                seen[key] = here
    return items, errors


def move_answer(choices: list[str], answer: int, target: int) -> list[str]:
    """Put choices[answer] at index target; the distractors keep their relative order."""
    distractors = [c for i, c in enumerate(choices) if i != answer]
    return distractors[:target] + [choices[answer]] + distractors[target:]


def main() -> int:
    items, errors = load()
    if errors:
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        print(f"{len(errors)} validation problem(s); nothing written", file=sys.stderr)
        return 1

    rng = random.Random(SEED)
    out_rows = []
    slot = 0  # round-robin counter carried across categories, so the overall counts balance too
    for category in CATEGORIES:
        rows = items[category]
        order = list(range(len(rows)))
        rng.shuffle(order)
        targets = [0] * len(rows)
        for idx in order:
            targets[idx] = slot % N_CHOICES
            slot += 1
        for item, target in zip(rows, targets):
            choices = move_answer(item["choices"], item["answer"], target)
            assert choices[target] == item["choices"][item["answer"]]
            out_rows.append({"category": category, "question": item["question"],
                             "choices": choices, "answer": target})

    with OUT.open("w", encoding="utf-8") as f:
        for n, row in enumerate(out_rows):
            f.write(json.dumps({"id": f"mc-{n:04d}", **row}, ensure_ascii=False) + "\n")

    letters = "ABCD"
    print(f"wrote {len(out_rows)} items to {OUT.relative_to(HERE.parent.parent)}")
    print(f"{'category':<12} {'n':>4}  " + "  ".join(f"{l:>3}" for l in letters))
    for category in CATEGORIES:
        pos = Counter(r["answer"] for r in out_rows if r["category"] == category)
        n = sum(pos.values())
        print(f"{category:<12} {n:>4}  " + "  ".join(f"{pos[i]:>3}" for i in range(N_CHOICES)))
    total = Counter(r["answer"] for r in out_rows)
    print(f"{'total':<12} {len(out_rows):>4}  " + "  ".join(f"{total[i]:>3}" for i in range(N_CHOICES)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
