"""The CLI end to end on a tiny suite: every arm, results.json, samples, report, re-render."""

from __future__ import annotations

import json

from click.testing import CliRunner

from harness.cli import main
from harness.results import read_results

from .conftest import make_suite


def test_compare_tiny_suite_end_to_end(tmp_path, tiny_model_dir, capfd):
    backends = ("  zero-shot: {type: prompt, shots: 0}\n"
                "  few-shot: {type: prompt, shots: 2}\n"
                "  too-long: {type: lora, max_steps: 2, max_length: 9}\n"   # fails in training
                "  full: {type: full, max_steps: 2, batch_size: 4, learning_rate: 1e-3}\n"
                "  lora: {type: lora, max_steps: 2, batch_size: 4}\n"
                "  qlora: {type: qlora, max_steps: 2, batch_size: 4}\n")
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=backends)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(out)])
    assert result.exit_code == 5, result.output      # one arm failed, the others are kept
    # The arms' own processes are as quiet as this one: no library warning (bitsandbytes' about
    # an optional hub kernel, on CPUs with fast bf16) leaks to the terminal.
    assert "gemm_4bit_forward" not in capfd.readouterr().err

    results = read_results(out)
    assert list(results.arms) == ["zero-shot", "few-shot", "too-long", "full", "lora", "qlora"]
    failed = results.arms["too-long"]
    assert failed.status == "failed" and "longer than max_length=9" in failed.error
    for name in ["zero-shot", "few-shot", "full", "lora", "qlora"]:
        arm = results.arms[name]
        assert arm.status == "ok", (name, arm.error)
        assert set(arm.metrics) == {"accuracy", "macro_f1", "exact_match", "perplexity"}
        assert all(m.n == 6 for m in arm.metrics.values())
        assert 0 <= arm.metrics["accuracy"].value <= 1 and arm.metrics["perplexity"].value >= 1
        rows = [json.loads(line) for line in (out / arm.samples).read_text().splitlines()]
        assert len(rows) == 6 and {"prediction", "label_logprobs", "target_nll"} <= set(rows[0])
        assert arm.cost.eval_seconds > 0 and arm.cost.peak_memory_bytes > 0
    for name in ["full", "lora", "qlora"]:
        arm = results.arms[name]
        assert arm.cost.train_steps == 2 and arm.cost.trainable_params > 0
        assert 0 < arm.cost.train_cpu_seconds and results.environment["accelerator"] in ("cpu", "cuda")
        assert (out / arm.artifact).is_dir()
    assert results.arms["lora"].cost.trainable_params < results.arms["full"].cost.trainable_params

    report = (out / "report.md").read_text()
    assert "| qlora | qlora |" in report and "Cost ledger" in report and "too-long" in report
    (out / "report.md").unlink()
    rerender = CliRunner().invoke(main, ["report", str(out)])
    assert rerender.exit_code == 0, rerender.output
    assert (out / "report.md").read_text() == report


def test_compare_only_selects_arms_and_rejects_unknown(tmp_path, tiny_model_dir):
    suite = make_suite(tmp_path / "suite", tiny_model_dir)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(out), "--only", "zero-shot"])
    assert result.exit_code == 0, result.output
    assert list(read_results(out).arms) == ["zero-shot"]
    bad = CliRunner().invoke(main, ["compare", str(suite), "--out", str(out), "--only", "nope"])
    assert bad.exit_code == 2 and "--only: no arm named nope" in bad.output


def test_report_on_a_missing_results_file_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "cannot read results" in result.output
