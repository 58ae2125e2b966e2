"""The regression gate end to end on the built-in model (slow): adapters trained by compare on the
sentiment data; the same adapter passes against its own baseline, a 1-step adapter and a damaging
learning rate fail with exit 1, a baseline of another suite gives exit 7, a pickle adapter exit 4."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "suites" / "data" / "sentiment"
GENERAL = REPO / "suites" / "general" / "default.yaml"

TASK = ("model: builtin:smollm2-135m-instruct\n"
        "task:\n  kind: classification\n"
        "  system: \"You classify the sentiment of reviews. Answer with one word: positive or negative.\"\n"
        "  prompt: \"Review: {text}\\nIs this review positive or negative?\"\n  labels: [negative, positive]\n"
        f"data: {{train: {DATA / 'train.jsonl'}, test: {DATA / 'test.jsonl'}}}\n"
        "metrics: [accuracy, macro_f1, exact_match, perplexity]\neval: {limit: 100}\n")


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.slow
def test_gate_end_to_end_on_the_builtin_model(tmp_path, tmp_path_factory, monkeypatch):
    cache = os.environ.get("HARNESS_SLOW_CACHE") or str(tmp_path_factory.mktemp("gate-builtin-cache"))
    monkeypatch.setenv("HARNESS_CACHE", cache)
    train_suite = tmp_path / "train.yaml"       # no general tasks: training and test scores only
    train_suite.write_text(
        "name: sentiment-train\n" + TASK + "backends:\n"
        "  lora: {type: lora, max_steps: 6, batch_size: 16, learning_rate: 1.0e-3}\n"
        "  one-step: {type: lora, max_steps: 1, batch_size: 16, learning_rate: 1.0e-3}\n"
        "  damaged: {type: lora, max_steps: 4, batch_size: 16, learning_rate: 2.0e-2, warmup_ratio: 0}\n")
    gate_suite = tmp_path / "gate.yaml"
    gate_suite.write_text("name: sentiment-gate\n" + TASK + f"general: {{set: {GENERAL}, limit: 30}}\n"
                          "backends:\n  zero-shot: {type: prompt}\n")
    run = tmp_path / "run"
    trained = CliRunner().invoke(main, ["compare", str(train_suite), "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    adapter = {arm: run / "arms" / arm / "adapter" for arm in ("lora", "one-step", "damaged")}

    baseline = tmp_path / "baseline.json"
    recorded = CliRunner().invoke(main, ["baseline", str(gate_suite), "--adapter", str(adapter["lora"]),
                                         "--out", str(baseline)])
    assert recorded.exit_code == 0, recorded.output

    def regress(suite, candidate, *extra):
        return CliRunner().invoke(main, ["regress", str(suite), "--adapter", str(candidate),
                                         "--baseline", str(baseline), *extra])

    same = regress(gate_suite, adapter["lora"])
    assert same.exit_code == 0, same.output
    assert "Regression gate passed" in same.output

    for arm in ("one-step", "damaged"):
        worse = regress(gate_suite, adapter[arm])
        assert worse.exit_code == 1, (arm, worse.output)
        assert "Why it failed" in worse.output and "accuracy" in worse.output.split("Why it failed")[1]

    other = regress(train_suite, adapter["lora"])
    assert other.exit_code == 7 and "suite differs" in other.output, other.output

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text((adapter["lora"] / "adapter_config.json").read_text())
    marker = tmp_path / "payload-ran"
    (pickled / "adapter_model.bin").write_bytes(pickle.dumps({"w": Payload(marker)}))
    refused = regress(gate_suite, pickled)
    assert refused.exit_code == 4 and "arbitrary code" in refused.output, refused.output
    assert not marker.exists()
