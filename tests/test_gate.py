"""The regression gate on the tiny model: every exit code, the probe, JUnit and Markdown, export."""

from __future__ import annotations

import json
import pickle
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.metrics import METRICS
from harness.regression import Margin, RegressionSpec, non_inferiority

from .conftest import make_suite, write_general_set

GENERAL = "general: {set: general/general.yaml}\n"


def _adapter(base_dir: Path, out: Path, scale: float, seed: int = 0) -> Path:
    """A LoRA adapter on the tiny model whose B matrices are N(0, scale) (0: untrained, a no-op)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "lm_head"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name and scale:
                param.normal_(0, scale)
    peft_model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {"good": _adapter(tiny_model_dir, root / "good", 0.02),
            "other": _adapter(tiny_model_dir, root / "other", 0.02, seed=1),
            "wrecked": _adapter(tiny_model_dir, root / "wrecked", 1.0),
            "untrained": _adapter(tiny_model_dir, root / "untrained", 0.0)}


def _suite(directory: Path, model_dir: Path, extra: str = "", name: str = "tiny") -> Path:
    write_general_set(directory / "general")
    path = make_suite(directory, model_dir, extra=GENERAL + extra)
    if name != "tiny":
        path.write_text(path.read_text().replace("name: tiny", f"name: {name}"))
    return path


@pytest.fixture(scope="module")
def gate_env(tiny_model_dir, adapters, tmp_path_factory):
    """A suite and a baseline recorded from the 'good' adapter."""
    root = tmp_path_factory.mktemp("gate")
    suite = _suite(root / "suite", tiny_model_dir)
    baseline = root / "baseline.json"
    result = CliRunner().invoke(main, ["baseline", str(suite), "--adapter", str(adapters["good"]),
                                       "--out", str(baseline)])
    assert result.exit_code == 0, result.output
    return {"suite": suite, "baseline": baseline, "root": root}


def _regress(suite, adapter, baseline, *extra):
    args = ["regress", str(suite), "--baseline", str(baseline)]
    args += ["--adapter", str(adapter)] if adapter is not None else []
    return CliRunner().invoke(main, args + [str(e) for e in extra])


def test_baseline_records_rows_metrics_and_fingerprints(gate_env, adapters):
    data = json.loads(gate_env["baseline"].read_text())
    assert data["format"] == "harness-baseline" and data["schema_version"] == 1
    assert [r["id"] for r in data["rows"]] == ["r8", "r9", "r10", "r11", "r0", "r1"]
    assert set(data["general_rows"]) == {"mc", "sa", "text"}
    assert set(data["metrics"]) == {"accuracy", "macro_f1", "exact_match", "perplexity"}
    assert {"mc/accuracy", "mc/accuracy_norm", "sa/exact_match", "text/perplexity"} == set(data["general"])
    fp = data["fingerprints"]
    for key in ("suite", "task", "data.test", "general.mc", "general.sa", "general.text", "base_model",
                "tokenizer", "chat_template", "decoding.strategy", "decoding.max_new_tokens", "decoding.stop",
                "decoding.precision", "decoding.eval_version", "adapter"):
        assert fp[key], key
    assert data["candidate"]["kind"] == "adapter" and data["candidate"]["sha256"] == fp["adapter"]
    assert data["probe"]["max_abs_diff"] > 1e-6


def test_same_adapter_passes_against_its_own_baseline_with_zero_difference(gate_env, adapters, tmp_path):
    junit, md = tmp_path / "junit.xml", tmp_path / "gate.md"
    for _ in range(2):   # deterministic: the same verdict and numbers every time
        result = _regress(gate_env["suite"], adapters["good"], gate_env["baseline"], "--junit", junit,
                          "--markdown", md)
        assert result.exit_code == 0, result.output
    text = md.read_text()
    assert "Regression gate passed" in text and "identical to the baseline" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "✅" in line and "probe" not in line]
    assert len(rows) == 8 and all("| +0 |" in row for row in rows)     # 4 task + 4 general metrics
    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    names = [(c.get("classname").rsplit(".", 1)[-1], c.get("name")) for c in cases]
    assert names == [("candidate", "adapter applied (probe)"), ("task", "accuracy"), ("task", "macro_f1"),
                     ("task", "exact_match"), ("task", "perplexity"), ("general", "mc"), ("general", "sa"),
                     ("general", "text")]
    assert root.get("failures") == "0" and not root.findall(".//failure")


def test_a_damaged_adapter_fails_with_exit_1_and_reports_why(gate_env, adapters, tmp_path):
    junit, md = tmp_path / "junit.xml", tmp_path / "gate.md"
    result = _regress(gate_env["suite"], adapters["wrecked"], gate_env["baseline"], "--junit", junit,
                      "--markdown", md)
    assert result.exit_code == 1, result.output
    text = md.read_text()
    assert "Regression gate failed" in text and "perplexity" in text.split("**Why it failed**")[1]
    failures = ET.parse(junit).getroot().findall(".//testcase[failure]")
    failed = {c.get("name") for c in failures}
    assert "perplexity" in failed and "text" in failed           # the task and the general text task
    assert "adapter applied (probe)" not in failed


def test_an_untrained_adapter_fails_the_gate(gate_env, adapters, tmp_path):
    junit = tmp_path / "junit.xml"
    result = _regress(gate_env["suite"], adapters["untrained"], gate_env["baseline"], "--junit", junit)
    assert result.exit_code == 1, result.output
    assert "no-op (untrained) or not attached" in result.output
    failed = [c.get("name") for c in ET.parse(junit).getroot().findall(".//testcase[failure]")]
    assert "adapter applied (probe)" in failed


def test_eval_warns_about_a_no_op_adapter_and_prints_scores(gate_env, adapters):
    result = CliRunner().invoke(main, ["eval", str(gate_env["suite"]), "--adapter", str(adapters["untrained"])])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "mc/accuracy" in result.output
    assert "warning:" in result.output and "no-op" in result.output


def test_margin_flag_and_gated_general_subset(gate_env, adapters, tiny_model_dir, tmp_path):
    """A generous margin lets another adapter through; gating only mc skips the other general tasks."""
    suite = _suite(tmp_path / "suite", tiny_model_dir, extra="regression: {general: [mc], metrics: [accuracy]}\n")
    md = tmp_path / "gate.md"
    result = _regress(suite, adapters["other"], gate_env["baseline"], "--margin", "1.0", "--markdown", md)
    assert result.exit_code == 0, result.output
    text = md.read_text()
    assert "| accuracy ↑" in text and "| mc/accuracy ↑" in text and "macro_f1" not in text and "sa/" not in text


def test_baseline_of_another_suite_is_not_comparable(gate_env, adapters, tiny_model_dir, tmp_path):
    other = _suite(tmp_path / "other", tiny_model_dir, name="other-suite")
    junit = tmp_path / "junit.xml"
    result = _regress(other, adapters["good"], gate_env["baseline"], "--junit", junit)
    assert result.exit_code == 7, result.output
    assert "suite differs: baseline 'tiny', now 'other-suite'" in result.output
    error = ET.parse(junit).getroot().find(".//testcase/error")
    assert error.get("type") == "not-comparable"


def test_other_precision_or_base_model_is_not_comparable(gate_env, adapters, tiny_model_dir, tmp_path,
                                                          tmp_path_factory):
    from .conftest import build_tiny_llama

    recorded = json.loads(gate_env["baseline"].read_text())["fingerprints"]["decoding.precision"]
    other_dtype = "float32" if recorded.startswith("bfloat16") else "bfloat16"
    precise = _suite(tmp_path / "precise", tiny_model_dir, extra=f"eval: {{dtype: {other_dtype}}}\n")
    result = _regress(precise, adapters["good"], gate_env["baseline"])
    assert result.exit_code == 7 and "decoding.precision differs" in result.output, result.output

    other_model = build_tiny_llama(tmp_path_factory.mktemp("other-llama"), seed=1)
    other = _suite(tmp_path / "other", other_model)
    refused = _regress(other, adapters["good"], gate_env["baseline"])
    assert refused.exit_code == 4 and "not the suite's model" in refused.output, refused.output
    allowed = _regress(other, adapters["good"], gate_env["baseline"], "--allow-base-mismatch")
    assert allowed.exit_code == 7 and "base_model differs" in allowed.output, allowed.output


def test_a_baseline_from_another_evaluation_version_is_not_comparable(gate_env, adapters, monkeypatch):
    """A release that changes batching or kernels moves the numbers (bf16 rounding follows the batch
    shapes): pairing them with the old baseline's could flip a gate for nothing."""
    import harness.evaluate

    monkeypatch.setattr(harness.evaluate, "EVAL_VERSION", harness.evaluate.EVAL_VERSION + 1)
    result = _regress(gate_env["suite"], adapters["good"], gate_env["baseline"])
    assert result.exit_code == 7 and "decoding.eval_version differs" in result.output, result.output


class Payload:
    """Unpickling this creates a file: the proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _pickle_adapter(adapters, tmp_path) -> tuple[Path, Path]:
    directory = tmp_path / "pickled"
    directory.mkdir()
    (directory / "adapter_config.json").write_text((adapters["good"] / "adapter_config.json").read_text())
    marker = tmp_path / "payload-ran"
    (directory / "adapter_model.bin").write_bytes(pickle.dumps({"weights": Payload(marker)}))
    assert not marker.exists()
    return directory, marker


def test_pickle_adapter_is_refused_and_its_payload_never_runs(gate_env, adapters, tmp_path):
    directory, marker = _pickle_adapter(adapters, tmp_path)
    for command in (["regress", str(gate_env["suite"]), "--baseline", str(gate_env["baseline"])],
                    ["eval", str(gate_env["suite"])],
                    ["baseline", str(gate_env["suite"]), "--out", str(tmp_path / "b.json")]):
        result = CliRunner().invoke(main, command + ["--adapter", str(directory)])
        assert result.exit_code == 4, result.output
        assert "adapter_model.bin" in result.output and "arbitrary code" in result.output
    assert not marker.exists() and not (tmp_path / "b.json").exists()
    # Even when allowed, the weights-only unpickler refuses the payload: still exit 4, still never run.
    junit, md = tmp_path / "junit.xml", tmp_path / "gate.md"
    allowed = _regress(gate_env["suite"], directory, gate_env["baseline"], "--allow-pickle", "--junit", junit,
                       "--markdown", md)
    assert allowed.exit_code == 4 and "weights-only unpickler" in allowed.output, allowed.output
    assert not marker.exists()
    assert ET.parse(junit).getroot().find(".//testcase/error").get("type") == "refused-artifact"
    assert md.read_text().startswith("## ⚠️ Regression gate candidate refused: tiny")


def test_model_with_custom_code_is_refused(gate_env, tiny_model_dir, tmp_path):
    import shutil

    model = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["regress", str(gate_env["suite"]), "--model", str(model),
                                       "--baseline", str(gate_env["baseline"])])
    assert result.exit_code == 4 and "config.json asks for custom code" in result.output, result.output


def test_usage_and_data_errors(gate_env, adapters, tiny_model_dir, tmp_path):
    neither = _regress(gate_env["suite"], None, gate_env["baseline"])
    assert neither.exit_code == 2 and "exactly one of --adapter" in neither.output
    bad_margin = _regress(gate_env["suite"], adapters["good"], gate_env["baseline"], "--margin", "-1")
    assert bad_margin.exit_code == 2 and "must be > 0" in bad_margin.output
    not_a_baseline = tmp_path / "results.json"
    not_a_baseline.write_text("{}")
    wrong = _regress(gate_env["suite"], adapters["good"], not_a_baseline)
    assert wrong.exit_code == 2 and "not a baseline file" in wrong.output
    bad_gating = _suite(tmp_path / "gating", tiny_model_dir,
                        extra="regression: {general: [nope, mc/bogus], margin: {acuracy: 0.1}, metrics: [bleu]}\n")
    gating = _regress(bad_gating, adapters["good"], gate_env["baseline"])
    assert gating.exit_code == 2, gating.output
    assert "regression.metrics.0: 'bleu' is not one of metrics" in gating.output
    bad_gating.write_text(bad_gating.read_text().replace(", metrics: [bleu]", ""))
    gating = _regress(bad_gating, adapters["good"], gate_env["baseline"])
    assert gating.exit_code == 2, gating.output
    assert "regression.general.0: no general task 'nope'" in gating.output
    assert "regression.general.1: task 'mc' has no metric 'bogus'" in gating.output
    bad_gating.write_text(bad_gating.read_text().replace("general: [nope, mc/bogus], ", ""))
    gating = _regress(bad_gating, adapters["good"], gate_env["baseline"])
    assert gating.exit_code == 2 and "(did you mean accuracy?)" in gating.output, gating.output
    bad_data = _suite(tmp_path / "bad", tiny_model_dir)
    (tmp_path / "bad" / "data" / "test.jsonl").write_text("{not json\n")
    data = _regress(bad_data, adapters["good"], gate_env["baseline"])
    assert data.exit_code == 3 and "malformed JSON" in data.output


def test_regression_section_is_validated(tiny_model_dir, tmp_path):
    suite = _suite(tmp_path / "s", tiny_model_dir, extra="regression: {margin: {accuracy: 0}, confidence: 2, x: 1}\n")
    result = CliRunner().invoke(main, ["validate", str(suite)])
    assert result.exit_code == 2
    assert "regression.margin: accuracy: margin 0 must be > 0" in result.output
    assert "regression.confidence" in result.output and "regression.x: unknown key" in result.output
    ok = _suite(tmp_path / "t", tiny_model_dir, extra="regression: {margin: {accuracy: 1e-2, perplexity: 5%}}\n")
    from harness.suite import load_suite

    assert load_suite(ok).regression.margin == {"accuracy": 0.01, "perplexity": "5%"}


# -- the statistics, on known numbers ---------------------------------------------------------------------

def _binary(values):
    return np.array([[float(v)] for v in values])


def test_non_inferiority_identical_passes_with_a_zero_bound():
    stats = _binary([1, 0, 1, 1, 0] * 20)
    check = non_inferiority(METRICS["accuracy"], "accuracy", "task", "s", stats, stats, [str(i) for i in range(100)],
                            Margin(0.02), 0.95, 1000, 0)
    assert check.passed and check.difference == 0 and check.lower == 0 and check.worse == 0


def test_non_inferiority_fails_a_clear_drop_and_lists_broken_examples():
    base = _binary([1] * 90 + [0] * 10)
    new = _binary([0] * 15 + [1] * 75 + [0] * 10)      # 15 broken, 0 fixed: 0.75 vs 0.90
    ids = [f"e{i}" for i in range(100)]
    check = non_inferiority(METRICS["accuracy"], "accuracy", "task", "s", new, base, ids, Margin(0.02), 0.95, 1000, 0)
    assert not check.passed and check.difference == pytest.approx(-0.15) and check.lower < -0.02
    assert check.broke == ids[:15] and (check.better, check.worse) == (0, 15)
    assert "is beyond the limit -0.02" in check.reason() and "15 examples got worse" in check.reason()
    # A small drop inside a wide margin passes.
    small = _binary([0] * 1 + [1] * 89 + [0] * 10)
    assert non_inferiority(METRICS["accuracy"], "accuracy", "task", "s", small, base, ids, Margin(0.1), 0.95,
                           1000, 0).passed


def test_non_inferiority_orients_lower_is_better_and_relative_margins():
    ppl = METRICS["perplexity"]
    base = np.array([[2.0, 1.0]] * 50)                 # perplexity e^2 = 7.39
    worse = np.array([[2.3, 1.0]] * 50)                # e^2.3 = 9.97: +35%
    better = np.array([[1.8, 1.0]] * 50)
    ids = [str(i) for i in range(50)]
    fail = non_inferiority(ppl, "perplexity", "task", "s", worse, base, ids, Margin(0.10, relative=True), 0.95, 500, 0)
    assert not fail.passed and fail.difference > 0 and fail.margin == pytest.approx(0.739, abs=1e-3)
    ok = non_inferiority(ppl, "perplexity", "task", "s", better, base, ids, Margin(0.10, relative=True), 0.95, 500, 0)
    assert ok.passed and ok.lower > 0


def test_margins_resolve_by_key_task_star_and_default():
    from harness.regression import margin_for

    spec = RegressionSpec(margin={"accuracy": 0.05, "mc": "3%", "*": 0.5})
    acc = METRICS["accuracy"]
    assert margin_for(spec, "accuracy", acc) == Margin(0.05)
    assert margin_for(spec, "mc/accuracy", acc, "mc") == Margin(0.03, relative=True)
    assert margin_for(spec, "exact_match", acc) == Margin(0.5)
    defaults = RegressionSpec()
    assert margin_for(defaults, "accuracy", acc) == Margin(0.02)
    assert margin_for(defaults, "perplexity", METRICS["perplexity"]) == Margin(0.10, relative=True)
    assert margin_for(defaults, "bleu", METRICS["bleu"]) == Margin(2.0)
    with pytest.raises(ValueError):
        RegressionSpec(margin="0%")
