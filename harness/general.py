"""The forgetting check's general tasks: multiple choice, short answer and plain-text perplexity.

A general set is a YAML file naming its tasks (suites/general/default.yaml ships with the project):

    tasks:
      knowledge: {kind: multiple_choice, data: mc.jsonl}
      short_answer: {kind: short_answer, data: short_answer.jsonl, shots: 3}
      text: {kind: perplexity, data: paragraphs.jsonl}

Scoring, identical for the base model and every arm:
- multiple_choice: the question as the user turn of the chat template; each choice scored as the
  assistant's reply by log-likelihood; accuracy (argmax of the sum) and accuracy_norm (argmax of
  the sum divided by the choice's length in UTF-8 bytes, as lm-evaluation-harness's acc_norm).
- short_answer: greedy answer after the first `shots` items as fixed exemplars (not scored),
  exact match (SQuAD v1.1 normalisation) against the answer or any alias.
- lm_eval: a task of lm-evaluation-harness's registry (or an include directory), run through
  harness/lm_eval_bridge.py on the same loaded model, scored per document by lm-eval.
- perplexity: each paragraph as plain text (no chat template), every token after the first
  scored given the ones before it; token-weighted perplexity over the paragraphs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.backend import Example, TaskFormat
from harness.errors import DataError, shown
from harness.evaluate import Request, cut_at_stop, run_requests
from harness.metrics import METRICS, Metric, mean_metric
from harness.prompts import encode_prompt, end_of_turn_id, render_prompt

SA_SYSTEM = "Answer the question with just the answer: a word, a name or a number."

REQUIRED = {"multiple_choice": ("question", "choices", "answer"),
            "short_answer": ("question", "answer"), "perplexity": ("text",)}


class GeneralTaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["multiple_choice", "short_answer", "perplexity", "lm_eval"]
    data: str = Field(description="JSONL file, relative to the general set's YAML file (lm_eval: the "
                                   "lm-evaluation-harness task name).")
    include: str | None = Field(None, description="lm_eval: a directory of extra task YAMLs.")
    limit: int | None = Field(None, gt=0, description="lm_eval: score only the first N documents.")
    shots: int = Field(0, ge=0, le=8, description="short_answer: leading items used as exemplars.")
    max_new_tokens: int = Field(16, gt=0, le=256)


class GeneralSetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tasks: dict[str, GeneralTaskSpec] = Field(min_length=1)


_MC = ("multiple_choice",)
TASK_METRICS: dict[str, dict[str, Metric]] = {
    "multiple_choice": {
        "accuracy": mean_metric("accuracy", _MC, "log-likelihood choice (sum over the choice's tokens)",
                                lambda r: float(r["ll_prediction"] == r["label"]), binary=True),
        "accuracy_norm": mean_metric("accuracy_norm", _MC, "log-likelihood choice divided by the choice's "
                                     "UTF-8 bytes (lm-eval acc_norm)",
                                     lambda r: float(r["norm_prediction"] == r["label"]), binary=True)},
    "short_answer": {"exact_match": replace(METRICS["exact_match"], variant=(
        "greedy answer after the fixed exemplars vs answer or alias, SQuAD v1.1 normalisation"))},
    "perplexity": {"perplexity": replace(METRICS["perplexity"], variant=(
        "exp(token-weighted NLL of every token after the first, plain text, no chat template)"))},
}


@dataclass(frozen=True)
class GeneralTask:
    name: str
    spec: GeneralTaskSpec
    path: str
    items: tuple[dict, ...]

    def metrics(self, rows: list[dict]) -> dict[str, Metric]:
        """The task's metrics; an lm-eval task's are the ones its documents were scored with."""
        if self.spec.kind != "lm_eval":
            return TASK_METRICS[self.spec.kind]
        from harness.lm_eval_bridge import lm_eval_metric_names

        return {name: _lm_eval_metric(self.spec.data, name, rows) for name in lm_eval_metric_names(rows)}


def _lm_eval_metric(task: str, name: str, rows: list[dict]) -> Metric:
    values = [r["scores"][name] for r in rows if name in r["scores"]]
    binary = all(v in (0.0, 1.0) for v in values)
    # lm-eval's per-document metrics used here (acc, acc_norm, exact_match, f1, ...) grow with quality.
    return mean_metric(name, ("lm_eval",), f"lm-evaluation-harness {task}: {name}, mean over documents",
                       lambda r: float(r["scores"][name]), binary=binary)


@dataclass(frozen=True)
class GeneralSet:
    path: str
    tasks: tuple[GeneralTask, ...]

    def metric_keys(self, rows_by_task: dict[str, list[dict]]) -> dict[str, Metric]:
        """'task/metric' -> Metric, in a stable order."""
        return {f"{t.name}/{m}": metric for t in self.tasks for m, metric in t.metrics(rows_by_task[t.name]).items()}


def resolve_set_path(name: str, suite_dir: Path) -> Path:
    """`default` is general/default.yaml beside the suite, else the one shipped with the project."""
    if name != "default":
        return suite_dir / name
    beside = suite_dir / "general" / "default.yaml"
    shipped = Path(__file__).resolve().parents[1] / "suites" / "general" / "default.yaml"
    return beside if beside.exists() else shipped


def lm_eval_tasks(names: list[str], include: str | None, limit: int | None) -> tuple[GeneralTask, ...]:
    spec = lambda name: GeneralTaskSpec(kind="lm_eval", data=name, include=include, limit=limit)  # noqa: E731
    return tuple(GeneralTask(f"lm_eval:{name}", spec(name), f"lm-eval task {name}", ()) for name in names)


def _read_set_spec(path: Path) -> tuple[GeneralSetSpec | None, list[str]]:
    """The general set file's tasks and the problems found in it (no data read)."""
    from harness.errors import SuiteError
    from harness.safe_yaml import read_yaml
    from harness.field_problems import pydantic_problems

    try:
        raw = read_yaml(path, what="general set")
    except SuiteError as exc:
        return None, exc.problems
    if not isinstance(raw, dict):
        return None, ["a general set is a mapping with tasks: {name: {kind: ..., data: ...}}; "
                      "see the general set format in the README"]
    try:
        spec = GeneralSetSpec.model_validate(raw)
    except ValidationError as exc:
        return None, pydantic_problems(exc, root=GeneralSetSpec)
    problems = []
    for name, task in spec.tasks.items():
        if task.kind == "lm_eval":
            continue
        data = path.parent / task.data
        if not data.is_file():
            problems.append(f"tasks.{name}.data: file {task.data!r} not found (paths are relative to the general set "
                            "file); fix the path")
    return spec, problems


def general_set_problems(path: Path) -> list[tuple[str, str]]:
    """Problems of a general set file, as (file, problem) pairs: what load_suite reports with the suite's."""
    return [(str(path), problem) for problem in _read_set_spec(Path(path))[1]]


def load_general_set(path: Path, limit: int | None = None) -> GeneralSet:
    from harness.errors import SuiteError

    path = Path(path)
    spec, problems = _read_set_spec(path)
    if problems:
        raise SuiteError(path, problems)
    tasks = tuple(GeneralTask(name, task, str(path.parent / task.data),
                              _read_items(path.parent / task.data, task.kind)[: limit or None])
                  for name, task in spec.tasks.items())
    for task in tasks:
        if task.spec.kind == "lm_eval":
            continue
        if len(task.items) <= task.spec.shots:
            need = f"more than shots ({task.spec.shots})" if task.spec.shots else "at least one"
            cut = f" (general.limit {limit})" if limit and limit <= task.spec.shots else ""
            raise DataError(f"{task.path}: {len(task.items)} items{cut}; the {task.spec.kind} task "
                            f"{task.name!r} needs {need}", "add items, or lower shots or general.limit")
    return GeneralSet(path=str(path), tasks=tasks)


def _item_problem(item: dict, kind: str) -> str | None:
    """What is wrong with one item of a general task, or None."""
    missing = [f for f in REQUIRED[kind] if f not in item]
    if missing:
        return f"missing field(s) {', '.join(missing)} for a {kind} item; add them"
    text_fields = {"multiple_choice": ("question",), "short_answer": ("question", "answer"),
                   "perplexity": ("text",)}[kind]
    for field_name in text_fields:
        if not isinstance(item[field_name], (str, int, float)) or isinstance(item[field_name], bool):
            return f"{field_name} is {type(item[field_name]).__name__}, not text; write a string"
    if kind == "perplexity" and not str(item["text"]).strip():
        return "text is empty; remove the line or write the paragraph"
    if kind == "short_answer" and not isinstance(item.get("aliases", []), list):
        return "aliases is not a list; write a list of strings, e.g. [\"NYC\"]"
    if kind == "multiple_choice":
        choices, answer = item["choices"], item["answer"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            return f"choices is {shown(choices)}; write a list of at least 2 strings"
        if isinstance(answer, str) and answer.strip().isdigit():
            answer = int(answer)
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            return (f"answer {shown(item['answer'])} is not an index into choices (0 to {len(choices) - 1}); "
                    "write the index of the right choice")
    return None


def _read_items(path: Path, kind: str) -> tuple[dict, ...]:
    from harness.data import read_jsonl

    items, bad, seen = [], [], {}
    for number, item in read_jsonl(path, what="general task data"):
        problem = _item_problem(item, kind)
        if problem:
            bad.append(f"{path}:{number}: {problem}")
            continue
        if kind == "multiple_choice":
            item = {**item, "answer": int(item["answer"])}
        item = {**item, **{f: str(item[f]) for f in ("question", "text") if f in item}}
        if kind == "short_answer":
            item = {**item, "answer": str(item["answer"])}
            if "aliases" in item:
                item["aliases"] = [str(a) for a in item["aliases"]]
        item_id = str(item.get("id", f"{path.stem}-{number}"))
        if item_id in seen:
            bad.append(f"{path}:{number}: id {shown(item_id, 40)} repeats line {seen[item_id]}; give every item its "
                       "own id (items are paired by id)")
        seen.setdefault(item_id, number)
        row = {"id": item_id, **item}
        row["id"] = item_id
        items.append(row)
    if bad:
        more = f"\n{path}: {len(bad) - 5} more bad items; fix them too" if len(bad) > 5 else ""
        raise DataError("\n".join(bad[:5]) + more)
    return tuple(items)


# -- evaluation -----------------------------------------------------------------------------------------

def evaluate_general(model, tokenizer, general: GeneralSet, batch_tokens: int,
                     bf16: bool = False) -> dict[str, list[dict]]:
    """Rows per task for one model (an adapter, if any, applied)."""
    runners = {"multiple_choice": _multiple_choice, "short_answer": _short_answer, "perplexity": _perplexity,
               "lm_eval": _lm_eval}
    return {task.name: runners[task.spec.kind](model, tokenizer, task, batch_tokens, bf16)
            for task in general.tasks}


def _chat_prompt(tokenizer, question: str, shots=(), system=None) -> list[int]:
    task = TaskFormat(kind="generation", system=system, labels=None, max_new_tokens=None, stop=())
    return encode_prompt(tokenizer, render_prompt(tokenizer, task, shots, Example("q", question, "")))


def _multiple_choice(model, tokenizer, task: GeneralTask, batch_tokens: int, bf16: bool) -> list[dict]:
    width = max(len(item["choices"]) for item in task.items)
    requests = []
    for item in task.items:
        choices = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in item["choices"]]
        choices += [choices[0]] * (width - len(choices))   # pad to a common count; padding is ignored
        requests.append(Request(_chat_prompt(tokenizer, item["question"]), tuple(choices)))
    scored, _ = run_requests(model, requests, 0, set(), tokenizer.pad_token_id, batch_tokens, task.name, bf16)
    rows = []
    for item, (scores, _) in zip(task.items, scored):
        logprobs = [lp for lp, _ in scores[: len(item["choices"])]]
        normed = [lp / max(1, len(c.encode("utf-8"))) for lp, c in zip(logprobs, item["choices"])]
        rows.append({"id": item["id"], "task": task.name, "label": str(int(item["answer"])),
                     "ll_prediction": str(max(range(len(logprobs)), key=logprobs.__getitem__)),
                     "norm_prediction": str(max(range(len(normed)), key=normed.__getitem__)),
                     "choice_logprobs": logprobs})
    return rows


def _short_answer(model, tokenizer, task: GeneralTask, batch_tokens: int, bf16: bool) -> list[dict]:
    shots = tuple(Example(i["id"], i["question"], i["answer"]) for i in task.items[: task.spec.shots])
    scored_items = task.items[task.spec.shots:]
    requests = [Request(_chat_prompt(tokenizer, item["question"], shots, SA_SYSTEM), ())
                for item in scored_items]
    stop_ids = {end_of_turn_id(tokenizer), tokenizer.eos_token_id}
    out, _ = run_requests(model, requests, task.spec.max_new_tokens, stop_ids, tokenizer.pad_token_id,
                          batch_tokens, task.name, bf16)
    return [{"id": item["id"], "task": task.name, "prompt": item["question"], "target": item["answer"],
             "aliases": list(item.get("aliases", [])),
             "prediction": cut_at_stop(tokenizer.decode(generated, skip_special_tokens=True), ("\n",))}
            for item, (_, generated) in zip(scored_items, out)]


def _perplexity(model, tokenizer, task: GeneralTask, batch_tokens: int, bf16: bool) -> list[dict]:
    requests = []
    for item in task.items:
        ids = tokenizer(item["text"], add_special_tokens=False)["input_ids"]
        requests.append(Request(ids[:1], (ids[1:],)))
    scored, _ = run_requests(model, requests, 0, set(), tokenizer.pad_token_id, batch_tokens, task.name, bf16)
    return [{"id": item["id"], "task": task.name, "target_nll": -scores[0][0], "target_tokens": scores[0][1]}
            for item, (scores, _) in zip(task.items, scored)]


def _lm_eval(model, tokenizer, task: GeneralTask, batch_tokens: int, bf16: bool) -> list[dict]:
    import torch

    from harness.lm_eval_bridge import run_lm_eval

    with torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=bf16):
        rows = run_lm_eval(model, tokenizer, [task.spec.data], task.spec.include, task.spec.limit)
    return [{**row, "task": task.name} for row in rows[task.spec.data]]


def general_metric_info(general: GeneralSet, rows_by_task: dict[str, list[dict]]) -> dict[str, dict]:
    return {key: {"higher_is_better": m.higher_is_better, "variant": m.variant}
            for key, m in general.metric_keys(rows_by_task).items()}

