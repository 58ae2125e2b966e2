"""Read the suite's splits (JSONL, CSV, Parquet, HF datasets) and format them into Examples.

Formatting here is tokenizer-free (templates filled from the row); harness/prompts.py turns
Examples into token ids with the model's chat template, identically for training and evaluation.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness import registry
from harness.backend import Example, TaskFormat, TrainData
from harness.errors import DataError, one_line, shown
from harness.general import GeneralSet, lm_eval_tasks, load_general_set, resolve_set_path
from harness.suite import Suite, template_fields

SPLITS = ("train", "validation", "test")
MAX_LINE_BYTES = 1 << 20


@dataclass(frozen=True)
class SuiteData:
    train: tuple[Example, ...]
    validation: tuple[Example, ...]
    test: tuple[Example, ...]
    task: TaskFormat
    seed: int
    general: GeneralSet | None = None            # the forgetting check's tasks (lm-eval's included)

    def train_data(self) -> TrainData:
        return TrainData(examples=self.train, task=self.task, seed=self.seed)


def task_format(suite: Suite) -> TaskFormat:
    t = suite.task
    return TaskFormat(kind=t.kind, system=t.system, labels=tuple(t.labels) if t.labels else None,
                      max_new_tokens=t.max_new_tokens, stop=tuple(t.stop))


def load_data(suite: Suite) -> SuiteData:
    """Every split read, checked and formatted; DataError (exit 3) naming the file and line otherwise."""
    splits, wheres = {}, {}
    for split in SPLITS:
        source = getattr(suite.data, split)
        if source is None:
            splits[split] = ()
            continue
        rows, where, places = _read_split(source, suite.base_dir)
        if not rows:
            raise DataError(f"{where}: the {split} split is empty", f"add examples or point data.{split} at "
                            "another file")
        splits[split], wheres[split] = tuple(format_rows(rows, suite, where, split, places)), where
    _check_shots(suite, len(splits["train"]), wheres["train"])
    test = splits["test"][: suite.eval.limit] if suite.eval.limit else splits["test"]
    return SuiteData(train=splits["train"], validation=splits["validation"], test=test,
                     task=task_format(suite), seed=suite.seed, general=load_general(suite))


def _check_shots(suite: Suite, n_train: int, where: str) -> None:
    """An arm's `shots` (exemplars drawn from the train split) must fit in the train split."""
    problems = []
    for arm, spec in suite.backends.items():
        shots = spec.options.get("shots")
        if isinstance(shots, int) and not isinstance(shots, bool) and shots > n_train:
            problems.append(f"{suite.path}: backends.{arm}.shots: {shots} exemplars but the train split ({where}) "
                            f"has {n_train} examples; lower shots to at most {n_train} or add training examples")
    if problems:
        raise DataError("\n".join(problems))


def load_general(suite: Suite) -> GeneralSet | None:
    spec = suite.general
    if spec is None:
        return None
    tasks = ()
    if spec.set:
        path = resolve_set_path(spec.set, suite.base_dir)
        tasks = load_general_set(path, spec.limit).tasks
    include = str(suite.base_dir / spec.lm_eval_include) if spec.lm_eval_include else None
    tasks += lm_eval_tasks(spec.lm_eval, include, spec.limit)
    return GeneralSet(path=spec.set or "", tasks=tasks) if tasks else None


# -- reading -----------------------------------------------------------------------------------------------

def max_line_bytes() -> int:
    """The longest line a JSONL/CSV file may have (HARNESS_MAX_LINE_BYTES, default 1 MiB): a bigger
    one is refused with its line number instead of being read into memory whole."""
    try:
        return max(1024, int(os.environ.get("HARNESS_MAX_LINE_BYTES", MAX_LINE_BYTES)))
    except ValueError:
        return MAX_LINE_BYTES


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file, read in bounded pieces: a line over max_line_bytes()
    or with bytes that are not UTF-8 is a DataError naming the line."""
    limit = max_line_bytes()
    with path.open("rb") as fh:
        number = 0
        while True:
            raw = fh.readline(limit + 3)
            if not raw:
                return
            number += 1
            if len(raw.rstrip(b"\r\n")) > limit:
                raise DataError(f"{path}:{number}: line longer than {limit:,} bytes",
                                "shorten or split that text (or raise HARNESS_MAX_LINE_BYTES)")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{number}: byte {exc.start + 1} of the line (0x{raw[exc.start]:02x}) is not "
                                "UTF-8", "re-save the file as UTF-8") from None
            yield number, (text.removeprefix("\ufeff") if number == 1 else text)


def read_jsonl(path: Path, what: str = "data") -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file."""
    rows = []
    try:
        for number, line in _text_lines(path):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: malformed JSON ({exc.msg} at column {exc.colno})",
                                "each line must be one JSON object") from None
            except RecursionError:
                raise DataError(f"{path}:{number}: JSON nested too deeply", "flatten that row") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}",
                                'write one object per line, e.g. {"text": "...", "label": "..."}')
            rows.append((number, row))
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({exc.strerror})", "check the path and its permissions") from None
    return rows


def read_rows(source: str, base_dir: Path) -> tuple[list[dict], str]:
    """Rows of one split as dicts, and a name for it in error messages."""
    rows, where, _ = _read_split(source, base_dir)
    return rows, where


def _read_split(source: str, base_dir: Path) -> tuple[list[dict], str, list[int] | None]:
    """Rows, a name for messages, and each row's line in the file (None where rows have no lines)."""
    if source.startswith("hf:"):
        return _read_hf(source[3:], base_dir), source, None
    path = (base_dir / source)
    where = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv", ".parquet"):
        raise DataError(f"{where}: unsupported file type {suffix!r}", "use .jsonl, .csv, .parquet or hf:NAME")
    if suffix == ".jsonl":
        numbered = read_jsonl(path)
        return [row for _, row in numbered], where, [number for number, _ in numbered]
    try:
        if suffix == ".csv":
            rows, lines = _read_csv(path)
            return rows, where, lines
        return _read_parquet(path), where, None
    except OSError as exc:
        raise DataError(f"{where}: cannot read ({exc.strerror})", "check the path and its permissions") from None


def _read_csv(path: Path) -> tuple[list[dict], list[int]]:
    limit = max_line_bytes()
    csv.field_size_limit(max(csv.field_size_limit(), limit))
    reader = csv.reader((line for _, line in _text_lines(path)), strict=True)
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            return [], []
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise DataError(f"{path}:1: column(s) {', '.join(map(shown, repeated))} appear twice in the header",
                            "give every column its own name")
        rows, lines = [], []
        start = reader.line_num + 1
        for record in reader:
            if not record:
                start = reader.line_num + 1
                continue
            if len(record) != len(header):
                raise DataError(f"{path}:{start}: {len(record)} fields, the header has {len(header)}",
                                "quote fields that contain commas")
            rows.append(dict(zip(header, record)))
            lines.append(start)
            start = reader.line_num + 1
        return rows, lines
    except csv.Error as exc:
        span = f" (the row starting on line {start})" if reader.line_num > start else ""
        raise DataError(f"{path}:{reader.line_num}: malformed CSV: {one_line(exc)}{span}",
                        'check the quotes: a field with commas, quotes or newlines is written "like ""this"""') from None


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, ValueError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)})",
                        "re-export it, or use .jsonl or .csv") from None


def _read_hf(spec: str, base_dir: Path) -> list[dict]:
    """hf:NAME[:SPLIT]; NAME may be a directory written by Dataset.save_to_disk (relative to the suite)."""
    import datasets

    name, _, split = spec.partition(":")
    local = base_dir / name
    try:
        if local.exists():
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if not split or split not in loaded:
                    raise DataError(f"hf:{spec}: choose a split with hf:{name}:SPLIT; "
                                    f"available: {', '.join(loaded)}")
                loaded = loaded[split]
        else:
            loaded = datasets.load_dataset(name, split=split or "train")
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types for "not found / offline"
        first = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"hf:{spec}: cannot load ({one_line(first)})",
                        "save the dataset locally with Dataset.save_to_disk and point at that directory") from None
    return list(loaded)


def _fields(template: str) -> set[str]:
    return set(template_fields(template))


def format_rows(rows: list[dict], suite: Suite, where: str, split: str,
                lines: list[int] | None = None) -> list[Example]:
    """Examples from rows: templates filled, labels checked, ids unique. `lines`: each row's line in
    the file, for messages (row N is the N-th row; its line differs where there are blank lines or a header)."""
    task = suite.task

    def row_name(i: int) -> str:
        return f"row {i + 1}" + (f" (line {lines[i]})" if lines and lines[i] != i + 1 else "")

    needed = _fields(task.prompt) | _fields(task.target)
    missing = needed - set(rows[0])
    if missing:
        raise DataError(f"{where}: column(s) {', '.join(sorted(missing))} used by the task templates are "
                        f"missing; available: {', '.join(one_line(str(c)) for c in rows[0])}",
                        "rename the columns or change task.prompt / task.target")
    examples, bad, incomplete, seen, repeated = [], [], [], {}, []
    for i, row in enumerate(rows):
        absent = sorted(needed - set(row))
        if absent:
            incomplete.append(f"{row_name(i)}: no {', '.join(absent)}")
            continue
        values = {k: ("" if v is None else str(v)) for k, v in row.items()}
        try:
            prompt, target = task.prompt.format_map(values), task.target.format_map(values)
        except (KeyError, ValueError, IndexError, AttributeError) as exc:
            raise DataError(f"{where}: {row_name(i)}: cannot fill the templates ({one_line(exc)})",
                            "write {column} with plain column names, and {{ }} for literal braces") from None
        label = target if task.kind == "classification" else None
        if label is not None and label not in task.labels:
            close = registry.did_you_mean(label.strip(), task.labels) if label.strip() else ""
            bad.append(f"{row_name(i)}: {shown(label, 40)}{close}")
        ex_id = str(row.get("id", f"{split}-{i}"))
        if ex_id in seen:
            repeated.append(f"{shown(ex_id, 40)} ({row_name(seen[ex_id])} and {row_name(i)})")
        seen.setdefault(ex_id, i)
        examples.append(Example(id=ex_id, prompt=prompt, target=target, label=label))
    if incomplete:
        raise DataError(f"{where}: {len(incomplete)} row(s) lack columns the task templates use: "
                        f"{'; '.join(incomplete[:5])}", "fill those columns in every row")
    if bad:
        raise DataError(f"{where}: {len(bad)} target(s) outside task.labels {list(task.labels)}: "
                        f"{'; '.join(bad[:5])}", "fix the rows or add the label to task.labels")
    if repeated:
        raise DataError(f"{where}: {len(repeated)} repeated id(s): {'; '.join(repeated[:5])}",
                        "give every row its own id (per-example results are paired by id), or drop the id column")
    return examples
