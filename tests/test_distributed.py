"""Training one arm in several processes: torchrun + accelerate (DDP, gloo) on 2 CPU processes."""

from __future__ import annotations

from click.testing import CliRunner

from harness.cli import main
from harness.results import read_results

from .conftest import make_suite

TWO_PROCESSES = ("  zero-shot: {type: prompt, shots: 0}\n"
                 "  lora: {type: lora, max_steps: 2, batch_size: 2, learning_rate: 1e-2, processes: 2}\n")


def test_an_arm_trains_in_two_cpu_processes_and_is_evaluated_once(tmp_path, tiny_model_dir):
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=TWO_PROCESSES)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(out), "--no-cache"])
    assert result.exit_code == 0, result.output

    arm = read_results(out).arms["lora"]
    assert arm.status == "ok", arm.error
    assert any(n.startswith("trained in 2 processes (ddp, gloo)") and "4 examples per optimizer step" in n
               for n in arm.notes), arm.notes
    assert not arm.train_cached and not arm.cached            # trained by this run, in its own processes
    assert arm.cost.train_steps == 2 and arm.cost.train_target_tokens > 0 and len(arm.loss_curve) == 2
    assert (out / arm.artifact / "adapter_model.safetensors").is_file()
    assert set(arm.metrics) == {"accuracy", "macro_f1", "exact_match", "perplexity"}
    assert all(m.n == 6 for m in arm.metrics.values())


def test_a_failing_training_process_fails_the_arm_with_its_reason(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HARNESS_FAULT", "nan_at_step=1")      # every rank writes a NaN into a weight
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=TWO_PROCESSES)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(out), "--no-cache"])
    assert result.exit_code == 5, result.output

    arm = read_results(out).arms["lora"]
    assert arm.status == "failed" and arm.exit_code == 5
    assert arm.error.startswith("error: training process 0 of 2: training stopped: the loss became nan")
    assert arm.error.endswith("lower the learning rate or check the data")
    assert read_results(out).arms["zero-shot"].status == "ok"
