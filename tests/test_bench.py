"""The benchmark runs end to end on the tiny model and its correctness checks hold: the same
requests as lm-eval, log-probs equal to separate scoring in fp32, greedy text identical to a
text-generation pipeline in fp32, and both trainers train."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("trl")
pytest.importorskip("lm_eval")


def test_bench_runs_on_the_tiny_model_and_agrees_with_the_alternatives(tmp_path, tiny_model_dir):
    from bench.__main__ import main

    out = tmp_path / "bench.json"
    args = ["--model", str(tiny_model_dir), "--out", str(out), "--scoring-limit", "12", "--lm-eval-batch", "4",
            "--mc-limit", "6", "--gen-limit", "6", "--max-new-tokens", "8", "--train-steps", "2",
            "--train-batch", "2", "--train-kinds", "full,lora", "--peak-size", "256", "--repeats", "2"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["peak_gflops"]["float32"] > 0 and report["versions"]["trl"]
    # the bf16 peak measured again right before the parts whose fractions of it are reported
    assert all(part["peak_gflops_bf16"] > 0 for part in report["scoring"].values())
    assert report["training"]["peak_gflops_bf16"] > 0
    for part in report["scoring"].values():
        assert part["requests"] == 12 and part["lm_eval_same_token_ids"] == 12
        assert part["max_abs_logprob_diff_vs_separate_fp32"] < 1e-3
    assert report["multiple_choice"]["items"] == 6
    generation = report["generation"]
    assert generation["identical_predictions_fp32"] == 6, generation["first_difference_fp32"]
    for kind in ("full", "lora"):
        assert report["training"][kind]["harness"]["tokens"] > 0
        # harness ran the rows' shared prefix once: fewer positions than the tokens it counts
        harness = report["training"][kind]["harness"]
        assert 0 < harness["computed_tokens"] < harness["tokens"]
        assert 0 < harness["fraction_of_bf16_peak_computed"] <= harness["fraction_of_bf16_peak"]
        assert report["training"][kind]["trl_defaults"]["tokens"] > 0
        assert report["training"][kind]["trl_defaults_harness_settings"]["tokens"] > 0
    # the like-for-like figures: alternatives also run under harness's process settings
    assert all(part["speedup_vs_lm_eval_same_settings"] > 0 for part in report["scoring"].values())
    assert report["multiple_choice"]["speedup_vs_lm_eval_same_settings"] > 0
    assert generation["speedup_vs_pipeline_bf16_same_settings"] > 0
    # each headline pair ran twice, alternated; the fastest run counts and every run is listed
    assert report["repeats"] == 2
    for part in report["scoring"].values():
        ours = part["figures"]["harness"]
        assert len(ours["runs_s"]) == 2 and ours["seconds"] == min(ours["runs_s"])
        assert len(part["figures"]["lm-eval HFLM (batch 4)"]["runs_s"]) == 2
    assert len(report["multiple_choice"]["harness_runs_s"]) == len(report["multiple_choice"]["lm_eval_batch4_runs_s"]) == 2
    assert len(generation["figures"]["harness (bf16 prompts)"]["runs_s"]) == 2
    assert len(generation["figures"]["pipeline loop (bf16)"]["runs_s"]) == 2
    for kind in ("full", "lora"):
        assert len(report["training"][kind]["harness"]["runs_s"]) == 2
        assert len(report["training"][kind]["trl_defaults"]["runs_s"]) == 2


def test_alternatives_like_for_like_training_runs_under_the_collector_setting_harness_trains_under():
    import gc

    from bench.common import harness_settings

    with harness_settings():                 # a training run's settings (TRL's like-for-like figure)
        frozen_in_training = gc.get_freeze_count()
    assert frozen_in_training > 0 and gc.get_freeze_count() == 0
