"""Prompts longer than the model's context: an explicit policy, counted in results."""

from __future__ import annotations

from click.testing import CliRunner

from harness.cli import main
from harness.results import read_results

from .conftest import REVIEWS, make_suite, write_jsonl


def _suite_with_a_long_review(tmp_path, tiny_model_dir, extra=""):
    suite = make_suite(tmp_path / "suite", tiny_model_dir,
                       backends="  zero-shot: {type: prompt, shots: 0}\n"
                                "  full: {type: full, max_steps: 1, batch_size: 4, max_length: 256}\n",
                       extra=extra)
    rows = [{"id": f"r{i}", "text": t, "label": y} for i, (t, y) in enumerate(REVIEWS)]
    long_text = " ".join([REVIEWS[0][0]] * 80)            # far over the tiny model's 512 positions
    write_jsonl(tmp_path / "suite" / "data" / "test.jsonl", rows[8:] + [{"id": "long-one", "text": long_text,
                                                                         "label": "positive"}])
    write_jsonl(tmp_path / "suite" / "data" / "train.jsonl", rows[:8] + [{"id": "t-long", "text": long_text,
                                                                          "label": "positive"}])
    return suite


def test_an_overlong_prompt_is_an_error_naming_the_example(tmp_path, tiny_model_dir):
    suite = _suite_with_a_long_review(tmp_path, tiny_model_dir)
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(tmp_path / "run"), "--no-cache"])
    assert result.exit_code == 3, result.output
    error = read_results(tmp_path / "run").arms["zero-shot"].error
    assert "example long-one" in error and "eval.overlong: truncate" in error


def test_truncate_policy_keeps_every_example_and_counts_the_cut_ones(tmp_path, tiny_model_dir):
    suite = _suite_with_a_long_review(tmp_path, tiny_model_dir, extra="eval: {overlong: truncate}\n")
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(tmp_path / "run"), "--no-cache"])
    assert result.exit_code == 0, result.output
    results = read_results(tmp_path / "run")
    for arm in results.arms.values():
        assert arm.metrics["accuracy"].n == 5 and arm.cost.eval_truncated == 1
    assert results.arms["full"].cost.train_skipped_examples == 1          # over max_length: 256
    assert results.arms["zero-shot"].cost.train_skipped_examples == 0


def test_out_of_memory_halves_the_batch_and_retries_then_fails_clearly(tmp_path, tiny_model_dir, monkeypatch):
    suite = make_suite(tmp_path / "suite", tiny_model_dir,
                       backends="  lora: {type: lora, max_steps: 2, batch_size: 8, learning_rate: 1e-3}\n")
    monkeypatch.setenv("HARNESS_FAULT", "oom_above_batch=2")       # batches of more than 2 rows "OOM"
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(tmp_path / "run"), "--no-cache"])
    assert result.exit_code == 0, result.output
    lora = read_results(tmp_path / "run").arms["lora"]
    assert lora.notes == ["out of memory at batch size 8: retried with 4 x 2 accumulated",
                          "out of memory at batch size 4: retried with 2 x 4 accumulated"]
    assert lora.cost.train_steps == 2

    monkeypatch.setenv("HARNESS_FAULT", "oom_above_batch=0")       # nothing fits
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(tmp_path / "run2"), "--no-cache"])
    assert result.exit_code == 6, result.output
    assert "out of memory while training at batch size 1" in read_results(tmp_path / "run2").arms["lora"].error
