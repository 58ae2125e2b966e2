"""Validate the hand-written general-ability text and write the suite files.

Inputs (written for this project, not copied from any benchmark or website):
  raw_text/short_answer.jsonl    {"question", "answer", "aliases", "category"} per line
  raw_text/paragraphs-*.jsonl    {"text", "topic"} per line, parts read in name order

Outputs (file order kept, ids assigned in that order):
  short_answer.jsonl   {"id": "sa-0000", "category", "question", "answer", "aliases"}
  paragraphs.jsonl     {"id": "para-0000", "topic", "text"}

Checks: valid JSON objects with exactly the expected fields, non-empty strings; no duplicate
question or paragraph after normalising case, whitespace and punctuation; answers 1-3 words;
answer and aliases non-empty after SQuAD normalisation (lower-case, no punctuation, no
articles; the exact-match scorer's normalisation) and no alias equal to the answer or another
alias after it; paragraphs 80-150 words, one line, no markdown. Every problem is printed and the
script exits 1 without writing anything if there is one. Standard library only, deterministic.

Run from anywhere:  python suites/general/make_text.py
"""

from __future__ import annotations

import json
import re
import string
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
RAW = HERE / "raw_text"
SA_FIELDS = {"question": str, "answer": str, "aliases": list, "category": str}
PARA_FIELDS = {"text": str, "topic": str}
ANSWER_WORDS = (1, 3)
PARA_WORDS = (80, 150)
_PUNCT = set(string.punctuation)


def squad_normalize(text: str) -> str:
    """Same as harness.metrics.squad_normalize (copied to keep this script stdlib-only)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def dedupe_key(text: str) -> str:
    """Case, whitespace and punctuation (ASCII and Unicode) do not make two texts different."""
    text = re.sub(r"[^\w\s]|_", " ", text.lower())
    return " ".join(text.split())


def read_jsonl(path: Path, fields: dict, problems: list[str]) -> list[tuple[str, dict]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{path.relative_to(HERE)}:{n}"
        if not line.strip():
            problems.append(f"{where}: blank line")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{where}: invalid JSON ({err})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        missing = sorted(set(fields) - set(row))
        extra = sorted(set(row) - set(fields))
        if missing:
            problems.append(f"{where}: missing field(s) {missing}")
        if extra:
            problems.append(f"{where}: unexpected field(s) {extra}")
        ok = not missing
        for key, kind in fields.items():
            if key not in row:
                continue
            value = row[key]
            if not isinstance(value, kind):
                problems.append(f"{where}: {key} must be {kind.__name__}")
                ok = False
            elif kind is str and not value.strip():
                problems.append(f"{where}: {key} is empty")
                ok = False
            elif kind is str and value != value.strip():
                problems.append(f"{where}: {key} has leading/trailing whitespace")
        if ok:
            rows.append((where, row))
    return rows


def check_short_answer(rows: list[tuple[str, dict]], problems: list[str]) -> None:
    seen: dict[str, str] = {}
    lo, hi = ANSWER_WORDS
    for where, row in rows:
        key = dedupe_key(row["question"])
        if key in seen:
            problems.append(f"{where}: duplicate question (same as {seen[key]})")
        seen.setdefault(key, where)
        n_words = len(row["answer"].split())
        if not lo <= n_words <= hi:
            problems.append(f"{where}: answer {row['answer']!r} has {n_words} words, want {lo}-{hi}")
        normed = [squad_normalize(row["answer"])]
        if not normed[0]:
            problems.append(f"{where}: answer {row['answer']!r} is empty after SQuAD normalisation")
        for alias in row["aliases"]:
            if not isinstance(alias, str) or not alias.strip():
                problems.append(f"{where}: alias {alias!r} is not a non-empty string")
                continue
            norm = squad_normalize(alias)
            if not norm:
                problems.append(f"{where}: alias {alias!r} is empty after SQuAD normalisation")
            elif norm in normed:
                problems.append(f"{where}: alias {alias!r} repeats the answer or another alias "
                                f"after SQuAD normalisation")
            normed.append(norm)


def check_paragraphs(rows: list[tuple[str, dict]], problems: list[str]) -> None:
    seen: dict[str, str] = {}
    lo, hi = PARA_WORDS
    for where, row in rows:
        text = row["text"]
        key = dedupe_key(text)
        if key in seen:
            problems.append(f"{where}: duplicate paragraph (same as {seen[key]})")
        seen.setdefault(key, where)
        n_words = len(text.split())
        if not lo <= n_words <= hi:
            problems.append(f"{where}: paragraph has {n_words} words, want {lo}-{hi}")
        if "\n" in text or "\r" in text:
            problems.append(f"{where}: paragraph contains a line break")
        if re.match(r"\s*([#>*+-]|\d+[.)])\s", text) or re.search(r"\*\*|__|`|#|\[.*\]\(", text):
            problems.append(f"{where}: paragraph looks like markdown or a list")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> int:
    problems: list[str] = []
    sa_path = RAW / "short_answer.jsonl"
    para_paths = sorted(RAW.glob("paragraphs-*.jsonl"))
    if not sa_path.is_file():
        problems.append(f"missing {sa_path.relative_to(HERE)}")
    if not para_paths:
        problems.append("no raw_text/paragraphs-*.jsonl files")
    sa_rows = read_jsonl(sa_path, SA_FIELDS, problems) if sa_path.is_file() else []
    para_rows = [r for p in para_paths for r in read_jsonl(p, PARA_FIELDS, problems)]
    check_short_answer(sa_rows, problems)
    check_paragraphs(para_rows, problems)
    if not sa_rows:
        problems.append("no short-answer questions")
    if not para_rows:
        problems.append("no paragraphs")

    if problems:
        for problem in problems:
            print(f"ERROR {problem}", file=sys.stderr)
        print(f"{len(problems)} problem(s); nothing written", file=sys.stderr)
        return 1

    short_answer = [
        {"id": f"sa-{i:04d}", "category": r["category"], "question": r["question"],
         "answer": r["answer"], "aliases": list(r["aliases"])}
        for i, (_, r) in enumerate(sa_rows)
    ]
    paragraphs = [
        {"id": f"para-{i:04d}", "topic": r["topic"], "text": r["text"]}
        for i, (_, r) in enumerate(para_rows)
    ]
    write_jsonl(HERE / "short_answer.jsonl", short_answer)
    write_jsonl(HERE / "paragraphs.jsonl", paragraphs)

    words = [len(p["text"].split()) for p in paragraphs]
    print(f"short_answer.jsonl: {len(short_answer)} questions")
    for cat, n in sorted(Counter(r["category"] for r in short_answer).items()):
        print(f"  {cat}: {n}")
    print(f"paragraphs.jsonl: {len(paragraphs)} paragraphs from {len(para_paths)} part(s), "
          f"{sum(words)} words ({min(words)}-{max(words)} per paragraph)")
    for topic, n in sorted(Counter(p["topic"] for p in paragraphs).items()):
        print(f"  {topic}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
