"""The lm-eval bridge: per-document rows whose numbers match an independent computation.

These need the `lm-eval` extra. CI installs it, so there a missing lm-eval fails loudly; locally the
tests are skipped without it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from harness.errors import DataError, UsageError
from harness.lm_eval_bridge import lm_eval_metric_names, run_lm_eval

DATA = Path(__file__).parent / "data" / "lm_eval" / "tiny_mc.jsonl"
DOCS = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]

# The prompt ends in a space and the delimiter is empty, so lm-eval has to move that space onto
# each choice (its whitespace handling), which the reference computation below reproduces.
TASK_YAML = """\
task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer: "
target_delimiter: ""
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""

# A Hub dataset that is not in any cache: offline (conftest sets HF_HUB_OFFLINE=1) it cannot load.
HUB_YAML = """\
task: tiny_hub
dataset_path: harness-tests/no-such-dataset
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: answer
"""


@pytest.fixture(scope="module")
def lm_eval():
    if os.environ.get("CI") != "true":
        pytest.importorskip("lm_eval")
    import lm_eval

    return lm_eval


@pytest.fixture(scope="module")
def include_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("lm-eval-tasks")
    (directory / "tiny_mc.yaml").write_text(TASK_YAML.format(data=json.dumps(str(DATA))), encoding="utf-8")
    (directory / "tiny_hub.yaml").write_text(HUB_YAML, encoding="utf-8")
    return directory


def _load(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)


def reference_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """Sum of log-softmax over the continuation's tokens, tokenised as lm-eval does for a causal LM:
    trailing whitespace of the context moves to the continuation, context + continuation is encoded
    whole, and the continuation is what follows the context's own encoding."""
    import torch

    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    n_context = len(tokenizer(context)["input_ids"])
    assert 0 < n_context < len(whole)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    return sum(logprobs[i - 1, whole[i]].item() for i in range(n_context, len(whole)))


def test_rows_match_independent_loglikelihoods(lm_eval, include_dir, tiny_model_dir, monkeypatch):
    model, tokenizer = _load(tiny_model_dir)
    logged = {}
    real = lm_eval.simple_evaluate

    def spy(*args, **kwargs):   # keep lm-eval's own output to compare the bridge's rows with
        logged.update(real(*args, **kwargs))
        return logged

    monkeypatch.setattr(lm_eval, "simple_evaluate", spy)
    rows = run_lm_eval(model, tokenizer, ["tiny_mc"], include_path=str(include_dir), batch_size=3)["tiny_mc"]

    assert [r["id"] for r in rows] == [str(i) for i in range(len(DOCS))]
    assert lm_eval_metric_names(rows) == ["acc", "acc_norm"]
    samples = {s["doc_id"]: s for s in logged["samples"]["tiny_mc"]}
    for i, (doc, row) in enumerate(zip(DOCS, rows)):
        assert row["task"] == "tiny_mc" and set(row["scores"].values()) <= {0.0, 1.0}
        context = f"Question: {doc['question']}\nAnswer: "
        assert [tuple(a) for a in samples[i]["arguments"]] == [(context, c) for c in doc["choices"]]
        lm_eval_lls = [r[0] for r in samples[i]["filtered_resps"]]
        assert lm_eval_lls == [r[0][0] for r in samples[i]["resps"]]
        ours = [reference_loglikelihood(model, tokenizer, context, c) for c in doc["choices"]]
        assert lm_eval_lls == pytest.approx(ours, abs=1e-4)
        best = max(range(len(ours)), key=ours.__getitem__)
        best_norm = max(range(len(ours)), key=lambda k: ours[k] / len(doc["choices"][k]))  # lm-eval: chars
        assert row["scores"] == {"acc": float(best == doc["answer"]), "acc_norm": float(best_norm == doc["answer"])}
        assert row["prompt"] == context and row["target"] == doc["choices"][doc["answer"]]
        assert row["prediction"] == doc["choices"][best]


def test_peft_model_pairs_with_its_base(lm_eval, include_dir, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    base, tokenizer = _load(tiny_model_dir)
    # LoRA's B starts at zero, so the wrapped model computes exactly what the base does.
    arm = get_peft_model(_load(tiny_model_dir)[0], LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    base_rows = run_lm_eval(base, tokenizer, ["tiny_mc"], str(include_dir), limit=3)["tiny_mc"]
    arm_rows = run_lm_eval(arm, tokenizer, ["tiny_mc"], str(include_dir), limit=3)["tiny_mc"]
    assert [r["id"] for r in arm_rows] == ["0", "1", "2"]
    assert arm_rows == base_rows


def test_unknown_task_is_a_usage_error(lm_eval, include_dir, tiny_model_dir):
    model, tokenizer = _load(tiny_model_dir)
    with pytest.raises(UsageError, match="tiny_mcq.*close names: .*tiny_mc"):
        run_lm_eval(model, tokenizer, ["tiny_mcq"], include_path=str(include_dir))


def test_hub_dataset_offline_is_a_data_error(lm_eval, include_dir, tiny_model_dir):
    model, tokenizer = _load(tiny_model_dir)
    with pytest.raises(DataError, match="lm-eval task tiny_hub: cannot load its dataset"):
        run_lm_eval(model, tokenizer, ["tiny_hub"], include_path=str(include_dir))


def test_missing_lm_eval_is_a_usage_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)   # makes `import lm_eval` fail as if not installed
    with pytest.raises(UsageError, match="lm-eval is not installed") as info:
        run_lm_eval(None, None, ["tiny_mc"])
    assert "harness[lm-eval]" in info.value.hint
