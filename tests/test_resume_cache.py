"""Never lose work: the content-addressed cache, resume after kill -9, training guards, determinism."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.results import read_results

from .conftest import make_suite

TWO_ARMS = ("  zero-shot: {type: prompt, shots: 0}\n"
            "  lora: {type: lora, max_steps: 4, batch_size: 4, learning_rate: 1e-2}\n")


def _compare(suite: Path, out: Path, *extra: str, expect: int = 0):
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(out), *extra])
    assert result.exit_code == expect, result.output
    return read_results(out)


def _metrics(results, arm):
    return {m: v.value for m, v in results.arms[arm].metrics.items()}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(path))
    return path


def test_unchanged_rerun_reuses_every_arm_and_a_changed_option_reruns_only_its_arm(tmp_path, cache,
                                                                                    tiny_model_dir):
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=TWO_ARMS)
    first = _compare(suite, tmp_path / "run1")
    assert not any(a.cached for a in first.arms.values())
    again = _compare(suite, tmp_path / "run2")
    assert all(a.cached for a in again.arms.values())
    assert _metrics(again, "lora") == _metrics(first, "lora")
    adapter = tmp_path / "run2" / again.arms["lora"].artifact
    assert (adapter / "adapter_model.safetensors").exists()          # artifact published into the run

    suite.write_text(suite.read_text().replace("learning_rate: 1e-2", "learning_rate: 5e-3"))
    changed = _compare(suite, tmp_path / "run3")
    assert changed.arms["zero-shot"].cached and not changed.arms["lora"].cached
    assert _metrics(changed, "lora") != _metrics(first, "lora")

    forced = _compare(suite, tmp_path / "run4", "--no-cache")
    assert not any(a.cached for a in forced.arms.values())


def test_new_test_data_or_decoding_evaluates_again_without_training_again(tmp_path, cache, tiny_model_dir):
    backends = ("  zero-shot: {type: prompt, shots: 0}\n"
                "  full: {type: full, max_steps: 3, batch_size: 2, learning_rate: 1e-3}\n"
                "  lora: {type: lora, max_steps: 3, batch_size: 4, learning_rate: 1e-2}\n"
                "  qlora: {type: qlora, max_steps: 3, batch_size: 4, learning_rate: 1e-2}\n")
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=backends)
    first = _compare(suite, tmp_path / "run1")
    for entry in (cache / "evals").glob("*.json"):    # as if the test data had changed: no evaluation cached
        entry.unlink()
    again = _compare(suite, tmp_path / "run2")
    for arm in ("full", "lora", "qlora"):
        result = again.arms[arm]
        assert result.train_cached and not result.cached, arm
        assert result.cost.train_seconds == first.arms[arm].cost.train_seconds      # the original training
        assert _metrics(again, arm) == _metrics(first, arm), arm     # the reopened model scores identically
        assert (tmp_path / "run2" / result.artifact).is_dir()
    assert not again.arms["zero-shot"].train_cached

    test_file = suite.parent / "data" / "test.jsonl"               # one test example fewer
    test_file.write_text("".join(test_file.read_text().splitlines(keepends=True)[:-1]))
    fewer = _compare(suite, tmp_path / "run3")
    assert all(fewer.arms[a].train_cached for a in ("full", "lora", "qlora"))
    assert fewer.arms["zero-shot"].metrics["accuracy"].n == first.arms["zero-shot"].metrics["accuracy"].n - 1


def test_a_damaged_training_record_is_trained_again_with_a_warning(tmp_path, cache, tiny_model_dir):
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=TWO_ARMS)
    first = _compare(suite, tmp_path / "run1")
    record = next((cache / "train").glob("*/trained.json"))
    record.write_text(record.read_text().replace('"steps": 4', '"steps": 5'))
    for entry in (cache / "evals").glob("*.json"):
        entry.unlink()
    again = _compare(suite, tmp_path / "run2", "--only", "lora")
    assert not again.arms["lora"].train_cached and again.arms["lora"].cost.train_steps == 4
    assert list(record.parent.glob("trained.json.corrupt-*"))          # set aside, not trusted
    assert _metrics(again, "lora") == _metrics(first, "lora")


def test_a_corrupt_cache_entry_is_a_miss_never_a_crash_or_a_wrong_hit(tmp_path, cache, tiny_model_dir):
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=TWO_ARMS)
    first = _compare(suite, tmp_path / "run1")
    entries = list((cache / "evals").glob("*.json"))
    assert len(entries) == 2
    for entry in entries:                       # flip one number inside each stored outcome
        text = entry.read_text()
        entry.write_text(text.replace('"eval_tokens": ', '"eval_tokens": 1', 1))
    with pytest.warns(UserWarning, match="unreadable"):
        again = _compare(suite, tmp_path / "run2")
    assert not any(a.cached for a in again.arms.values())
    assert _metrics(again, "lora") == _metrics(first, "lora")


def _weights(run: Path, results, arm: str) -> bytes:
    return (run / results.arms[arm].artifact / "model.safetensors").read_bytes()


def test_kill_9_during_training_resumes_from_the_last_good_checkpoint_bit_identical(tmp_path, cache,
                                                                                  tiny_model_dir, monkeypatch):
    backends = "  full: {type: full, max_steps: 6, batch_size: 2, learning_rate: 1e-3, checkpoint_every: 2}\n"
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=backends)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "reference-cache"))   # an uninterrupted run
    reference = _compare(suite, tmp_path / "reference")

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    monkeypatch.setenv("HARNESS_FAULT", "kill_at_step=5")
    killed = _compare(suite, tmp_path / "killed", expect=6)      # SIGKILL: most often the OOM killer
    assert "SIGKILL" in killed.arms["full"].error
    work = next((cache / "train").glob("*"))
    checkpoints = sorted(p.name for p in (work / "trainer").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    half = work / "trainer" / "checkpoint-5"           # what a kill in the middle of a save leaves
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"truncated")

    monkeypatch.delenv("HARNESS_FAULT")
    resumed = _compare(suite, tmp_path / "resumed")
    assert (work / "trained.json").exists() and not (work / "trainer").exists()   # finished: no checkpoints
    assert _weights(tmp_path / "resumed", resumed, "full") == _weights(tmp_path / "reference", reference, "full")
    assert _metrics(resumed, "full") == _metrics(reference, "full")
    assert resumed.arms["full"].cost.train_steps == 6


@pytest.mark.parametrize("fault, reason, step", [
    ("nan_at_step=2", "the loss became nan", 3),     # written at the end of step 2, caught in step 3
    ("zero_loss", "collapsed: zero gradient norm for 3 steps", 3),
    ("nan_at_step=8", "the weights became non-finite", 8)])    # the last step: caught before saving
def test_a_broken_run_stops_its_arm_with_the_reason_and_the_others_go_on(tmp_path, cache, tiny_model_dir,
                                                                          monkeypatch, fault, reason, step):
    backends = ("  zero-shot: {type: prompt, shots: 0}\n"
                "  full: {type: full, max_steps: 8, batch_size: 2, learning_rate: 1e-3}\n")
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=backends)
    monkeypatch.setenv("HARNESS_FAULT", fault)
    results = _compare(suite, tmp_path / "run", expect=5)
    full = results.arms["full"]
    assert full.status == "failed" and full.exit_code == 5 and reason in full.error
    assert int(re.search(r"\(step (\d+)\)", full.error).group(1)) == step
    assert results.arms["zero-shot"].status == "ok"
    assert full.artifact is None and not (tmp_path / "run" / "arms" / "full" / "model").exists()
    assert len(list((cache / "evals").glob("*.json"))) == 1            # only the prompt arm was cached
    assert not list((cache / "train").glob("*/trained.json"))          # nothing trained was kept


def test_a_full_disk_while_saving_fails_the_arm_with_exit_6_and_leaves_nothing_half_written(
        tmp_path, cache, tiny_model_dir, monkeypatch):
    backends = ("  zero-shot: {type: prompt, shots: 0}\n"
                "  full: {type: full, max_steps: 2, batch_size: 2, learning_rate: 1e-3}\n")
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=backends)
    monkeypatch.setenv("HARNESS_FAULT", "disk_full_on_save")
    results = _compare(suite, tmp_path / "run", expect=6)
    full = results.arms["full"]
    assert full.status == "failed" and full.exit_code == 6 and "disk full while saving" in full.error
    assert results.arms["zero-shot"].status == "ok"                    # the other arm is kept
    work = next((cache / "train").glob("*/trainer")).parent             # its checkpoints stay for a re-run
    assert not [p.name for p in work.iterdir() if p.name != "trainer"]  # no partial model, no record

    monkeypatch.delenv("HARNESS_FAULT")                                 # space freed: the same command
    again = _compare(suite, tmp_path / "run2")
    assert again.arms["full"].status == "ok" and again.arms["zero-shot"].cached


def test_same_suite_and_seed_give_identical_results_apart_from_times(tmp_path, cache, tiny_model_dir):
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=TWO_ARMS)
    runs = [_compare(suite, tmp_path / f"run{i}", "--no-cache") for i in range(2)]

    def stable(results):
        data = json.loads(results.model_dump_json())
        data.pop("created")
        for arm in data["arms"].values():
            for key in ("train_seconds", "train_cpu_seconds", "eval_seconds", "general_eval_seconds",
                        "peak_memory_bytes"):
                arm["cost"].pop(key)
        return data

    assert stable(runs[0]) == stable(runs[1])
    samples = [(tmp_path / f"run{i}" / "samples" / "lora.jsonl").read_bytes() for i in range(2)]
    assert samples[0] == samples[1]
