"""The forgetting check: adapters are scored with the adapter applied, damage is caught, prompt arms
are the base model (difference exactly zero), and lm-eval tasks run through the same pairing."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.general import evaluate_general, load_general_set
from harness.results import read_results

from .conftest import REVIEWS, make_suite, write_general_set, write_jsonl
from .test_lm_eval_bridge import DATA as LM_EVAL_DATA, TASK_YAML


def _load(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)


def _numbers(rows_by_task):
    """Every number a general row carries (log-probs, NLLs, predictions), for exact comparison."""
    return {task: [(r.get("choice_logprobs"), r.get("target_nll"), r.get("prediction")) for r in rows]
            for task, rows in rows_by_task.items()}


def test_untrained_adapter_scores_exactly_as_base_and_trained_one_does_not(tmp_path, tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model

    general = load_general_set(write_general_set(tmp_path / "general"))
    model, tok = _load(tiny_model_dir)
    base = evaluate_general(model, tok, general, 4096)
    torch.manual_seed(0)
    adapted = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    adapted.eval()
    assert _numbers(evaluate_general(adapted, tok, general, 4096)) == _numbers(base)   # B = 0: a no-op

    with torch.no_grad():                     # what training does: B moves away from zero
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    moved = evaluate_general(adapted, tok, general, 4096)
    assert _numbers(moved)["text"] != _numbers(base)["text"]
    assert _numbers(moved)["mc"] != _numbers(base)["mc"]


def _big_general_set(directory):
    """Enough paragraphs (48) for a paired test to reach significance."""
    path = write_general_set(directory)
    texts = [f"{a} {b}" for (a, _), (b, _) in zip(REVIEWS * 4, REVIEWS[3:] + REVIEWS[:3] + REVIEWS * 3)]
    write_jsonl(directory / "text.jsonl", [{"id": f"t{i}", "text": t} for i, t in enumerate(texts)])
    return path


def test_compare_catches_a_destructive_arm_and_prompt_arms_differ_by_zero(tmp_path, tiny_model_dir):
    if os.environ.get("CI") != "true":
        pytest.importorskip("lm_eval")
    _big_general_set(tmp_path / "suite" / "general")
    include = tmp_path / "suite" / "lm_eval_tasks"
    include.mkdir(parents=True)
    (include / "tiny_mc.yaml").write_text(TASK_YAML.format(data=json.dumps(str(LM_EVAL_DATA))), encoding="utf-8")
    backends = ("  zero-shot: {type: prompt, shots: 0}\n"
                "  few-shot: {type: prompt, shots: 2}\n"
                "  gentle: {type: lora, max_steps: 1, batch_size: 4, learning_rate: 1e-5}\n"
                "  wrecked: {type: full, max_steps: 6, batch_size: 4, learning_rate: 0.3, warmup_ratio: 0}\n")
    general = ("general: {set: general/general.yaml, lm_eval: [tiny_mc], lm_eval_include: lm_eval_tasks}\n"
               "decision: {max_perplexity_increase: 0.05}\n")
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=backends, extra=general)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = read_results(out)

    assert set(results.general.base) >= {"mc/accuracy", "mc/accuracy_norm", "sa/exact_match",
                                         "text/perplexity", "lm_eval:tiny_mc/acc", "lm_eval:tiny_mc/acc_norm"}
    for name in ("zero-shot", "few-shot"):
        arm = results.arms[name]
        assert arm.general == results.general.base
        assert arm.forgetting and all(c.difference == 0 and c.p_value == 1 for c in arm.forgetting)
        assert arm.forgetting_summary.metric is None

    wrecked = results.arms["wrecked"]
    assert wrecked.status == "ok", wrecked.error
    text = next(c for c in wrecked.forgetting if c.metric == "text/perplexity")
    assert text.difference > 0 and text.p_value < 0.05 and text.test == "paired-bootstrap"
    assert wrecked.forgetting_summary.metric == "text/perplexity" and wrecked.forgetting_summary.relative
    assert wrecked.forgetting_summary.drop > 0.05
    assert any("wrecked forgets" in reason for reason in results.decision.reasons)
    assert len(wrecked.forgetting) == len(results.general.base)    # every general metric paired
    rows = [json.loads(line) for line in (out / wrecked.general_samples).read_text().splitlines()]
    assert {r["task"] for r in rows} == {"mc", "sa", "text", "lm_eval:tiny_mc"}
