"""Read the suite's splits (JSONL, CSV, Parquet, HF datasets) and format them into Examples.

Formatting here is tokenizer-free (templates filled from the row); harness/prompts.py turns
Examples into token ids with the model's chat template, identically for training and evaluation.
"""

from __future__ import annotations

import csv
import json
import string
from dataclasses import dataclass
from pathlib import Path

from harness.backend import Example, TaskFormat, TrainData
from harness.errors import DataError
from harness.general import GeneralSet, lm_eval_tasks, load_general_set, resolve_set_path
from harness.suite import Suite

SPLITS = ("train", "validation", "test")


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
    splits = {}
    for split in SPLITS:
        source = getattr(suite.data, split)
        if source is None:
            splits[split] = ()
            continue
        rows, where = read_rows(source, suite.base_dir)
        if not rows:
            raise DataError(f"{where}: the {split} split is empty", "add examples or point data."
                            f"{split} at another file")
        splits[split] = tuple(format_rows(rows, suite, where, split))
    test = splits["test"][: suite.eval.limit] if suite.eval.limit else splits["test"]
    return SuiteData(train=splits["train"], validation=splits["validation"], test=test,
                     task=task_format(suite), seed=suite.seed, general=load_general(suite))


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


def read_rows(source: str, base_dir: Path) -> tuple[list[dict], str]:
    """Rows of one split as dicts, and a name for it in error messages."""
    if source.startswith("hf:"):
        return _read_hf(source[3:], base_dir), source
    path = (base_dir / source)
    where = str(path)
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}
    if suffix not in readers:
        raise DataError(f"{where}: unsupported file type {suffix!r}", "use .jsonl, .csv, .parquet or hf:NAME")
    try:
        return readers[suffix](path), where
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: byte {exc.start} is not UTF-8", "re-save the file as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{where}: cannot read ({exc.strerror})") from None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: malformed JSON ({exc.msg})",
                                "each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return []
        rows = []
        for record in reader:
            if not record:
                continue
            if len(record) != len(header):
                raise DataError(f"{path}:{reader.line_num}: {len(record)} fields, the header has "
                                f"{len(header)}", "quote fields that contain commas")
            rows.append(dict(zip(header, record)))
        return rows


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


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
        raise DataError(f"hf:{spec}: cannot load ({str(exc).splitlines()[0]})",
                        "save the dataset locally with Dataset.save_to_disk and point at that directory") from None
    return list(loaded)


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def format_rows(rows: list[dict], suite: Suite, where: str, split: str) -> list[Example]:
    task = suite.task
    needed = _fields(task.prompt) | _fields(task.target)
    missing = needed - set(rows[0])
    if missing:
        raise DataError(f"{where}: column(s) {', '.join(sorted(missing))} used by the task templates are "
                        f"missing; available: {', '.join(rows[0])}",
                        "rename the columns or change task.prompt / task.target")
    examples, bad = [], []
    for i, row in enumerate(rows):
        values = {k: ("" if v is None else str(v)) for k, v in row.items()}
        try:
            prompt, target = task.prompt.format_map(values), task.target.format_map(values)
        except (KeyError, ValueError) as exc:
            raise DataError(f"{where}: row {i + 1}: cannot fill the templates ({exc})") from None
        label = target if task.kind == "classification" else None
        if label is not None and label not in task.labels:
            bad.append(f"row {i + 1}: {label!r}")
        examples.append(Example(id=str(row.get("id", f"{split}-{i}")), prompt=prompt, target=target,
                                label=label))
    if bad:
        raise DataError(f"{where}: {len(bad)} target(s) outside task.labels {list(task.labels)}: "
                        f"{'; '.join(bad[:5])}", "fix the rows or add the label to task.labels")
    return examples
