"""lm-evaluation-harness tasks as forgetting-check tasks: per-document scores for a loaded model.

The forgetting check pairs the base model and each arm item by item, so lm-eval's aggregate numbers
are not enough: we run its tasks with log_samples=True and read each document's metric values from
the logged samples. The model is the one already in memory (plain or PEFT-wrapped), wrapped in
lm-eval's HFLM, so the numbers are for exactly the weights the harness trained.

Nothing is downloaded on our behalf: a task whose dataset lives on the Hub fails when the user is
offline (HF_HUB_OFFLINE=1), and we say which task it was. lm-eval is an optional extra.
"""

from __future__ import annotations

import difflib
import numbers
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from harness.errors import DataError, UsageError

INSTALL_HINT = "pip install 'harness[lm-eval]'"


def run_lm_eval(model, tokenizer, tasks: list[str], include_path: str | None = None,
                limit: int | None = None, batch_size: int = 8) -> dict[str, list[dict]]:
    """Per task name: one row per document, in doc order:
       {"id": str(doc_id), "task": task_name, "scores": {metric_name: float, ...}}
       plus, where available, "prompt", "target", "prediction" (strings, for display)."""
    lm_eval = _import_lm_eval()
    from lm_eval.models.huggingface import HFLM

    manager = _task_manager(include_path)
    loaded = _load_tasks(manager, tasks)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    with _rng_preserved():
        # Task objects, not names: the datasets are already loaded and each failure attributed.
        # bootstrap_iters=0: we pair per item ourselves, lm-eval's stderr would only cost time.
        # task_manager too, or simple_evaluate would index every YAML again just to hold our objects.
        out = lm_eval.simple_evaluate(model=lm, tasks=list(loaded.values()), task_manager=manager,
                                      limit=limit, bootstrap_iters=0, log_samples=True, batch_size=batch_size)
    return {name: _rows(name, out["samples"].get(name, []), out["configs"][name].get("output_type"))
            for name in loaded}


def lm_eval_metric_names(rows: list[dict]) -> list[str]:
    """The metric names present in the rows' scores, in first-seen order."""
    return list(dict.fromkeys(name for row in rows for name in row["scores"]))


def _import_lm_eval():
    try:
        import lm_eval
    except ModuleNotFoundError as exc:
        if exc.name != "lm_eval":   # installed but broken: show the real error, not "not installed"
            raise
        raise UsageError("lm-eval is not installed", INSTALL_HINT) from None
    return lm_eval


@lru_cache(maxsize=4)
def _task_manager(include_path: str | None):
    """Indexing lm-eval's ~15k task YAMLs takes seconds; the base model and every arm share one index."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise UsageError(f"lm-eval include path {include_path} is not a directory")
    return TaskManager(include_path=str(include_path) if include_path else None)


def _load_tasks(manager, names: list[str]) -> dict:
    """Leaf task name -> Task. A group or tag expands to its tasks; one name at a time so that a
    dataset that cannot be loaded is reported against the name the user gave."""
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        near = sorted({m for name in unknown for m in difflib.get_close_matches(name, manager.all_tasks, 5)})
        raise UsageError(f"unknown lm-eval task(s): {', '.join(unknown)}"
                         + (f"; close names: {', '.join(near)}" if near else ""),
                         "task names come from lm-eval's registry or the YAMLs in the include path")
    loaded = {}
    for name in names:
        try:
            loaded.update(manager.load([name])["tasks"])
        except OSError as exc:   # datasets raises ConnectionError (an OSError) offline, FileNotFound locally
            raise DataError(f"lm-eval task {name}: cannot load its dataset ({exc})",
                            "Hub datasets must already be in the local cache: the harness runs offline "
                            "(HF_HUB_OFFLINE=1); or point a task YAML in the include path at local files") from None
    return loaded


@contextmanager
def _rng_preserved():
    """simple_evaluate reseeds Python, NumPy and torch globally (for its own reproducibility); put the
    caller's streams back so a forgetting check does not change what a run does afterwards."""
    import random

    import numpy as np
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _rows(task: str, samples: list[dict], output_type: str | None) -> list[dict]:
    rows: dict[int, dict] = {}
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        row = rows.setdefault(sample["doc_id"], {"id": str(sample["doc_id"]), "task": task, "scores": {},
                                                 **_display(sample, output_type)})
        # A task with several filters (e.g. strict vs flexible answer extraction) logs one sample per
        # filter; keep them apart the way lm-eval's results do ("exact_match,flexible-extract").
        suffix = "" if sample.get("filter", "none") == "none" else f",{sample['filter']}"
        for metric in sample.get("metrics", []):
            value = sample.get(metric)
            # Corpus-level metrics (bleu, perplexities) log aggregation inputs such as tuples, not a
            # per-document score; there is nothing to pair for those.
            if isinstance(value, numbers.Real):
                row["scores"][metric + suffix] = float(value)
    return list(rows.values())


def _display(sample: dict, output_type: str | None) -> dict:
    """Prompt, target and prediction as strings, for showing disagreements; best effort."""
    args, resps, target = sample.get("arguments") or [], sample.get("filtered_resps") or [], sample.get("target")
    shown = {}
    if args and isinstance(args[0], (list, tuple)) and isinstance(args[0][0], str):
        shown["prompt"] = args[0][0]
    if output_type == "multiple_choice" and args:
        choices = [str(a[1]).strip() for a in args]
        lls = [r[0] if isinstance(r, (list, tuple)) else r for r in resps]
        if isinstance(target, int) and 0 <= target < len(choices):
            shown["target"] = choices[target]
        if lls:
            shown["prediction"] = choices[max(range(len(lls)), key=lls.__getitem__)]
        return shown
    if target is not None:
        shown["target"] = str(target)
    if resps and isinstance(resps[0], str):
        shown["prediction"] = resps[0]
    return shown
