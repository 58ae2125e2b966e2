"""Trained arms' artifacts are standard: adapters load with PeftModel.from_pretrained and reproduce the
run's scores; `harness export --merged` writes a plain model that needs no peft and passes the gate
against the adapter's baseline."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.results import read_results

from .conftest import make_suite

BACKENDS = ("  lora: {type: lora, max_steps: 2, batch_size: 4, learning_rate: 1e-2}\n"
            "  full: {type: full, max_steps: 1, batch_size: 4, learning_rate: 1e-3}\n")


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    suite = make_suite(root / "suite", tiny_model_dir, backends=BACKENDS)
    out = root / "run"
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return {"suite": suite, "out": out, "root": root}


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_adapter_is_standard_peft_and_reproduces_the_runs_scores(run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = run["out"] / read_results(run["out"]).arms["lora"].artifact
    assert sorted(p.name for p in adapter.iterdir() if p.suffix in (".json", ".safetensors")) == [
        "adapter_config.json", "adapter_model.safetensors"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = list(range(5, 25))
    before = _logits(base, ids).clone()
    peft_model = PeftModel.from_pretrained(base, str(adapter)).eval()
    assert (_logits(peft_model, ids) - before).abs().max() > 1e-6       # trained and applied

    # harness eval on the saved adapter reproduces what compare measured on the in-memory model.
    result = CliRunner().invoke(main, ["eval", str(run["suite"]), "--adapter", str(adapter)])
    assert result.exit_code == 0, result.output
    recorded = read_results(run["out"]).arms["lora"].metrics
    shown = {line.split()[0]: float(line.split()[1]) for line in result.output.splitlines()
             if line.startswith("  ") and line.split()[0] in recorded}
    assert shown == {name: pytest.approx(v.value, rel=1e-3) for name, v in recorded.items()}


def test_export_merged_loads_without_peft_and_passes_the_adapters_gate(run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = run["out"] / "arms" / "lora" / "adapter"
    merged = run["root"] / "merged"
    result = CliRunner().invoke(main, ["export", str(run["out"]), "lora", "--merged", str(merged)])
    assert result.exit_code == 0, result.output
    files = {p.name for p in merged.iterdir()}
    assert "model.safetensors" in files and "adapter_config.json" not in files and "tokenizer.json" in files
    assert not any(name.endswith((".bin", ".pt")) for name in files)
    assert "peft" not in json.loads((merged / "config.json").read_text()).get("architectures", [""])[0].lower()
    assert AutoTokenizer.from_pretrained(merged).chat_template

    ids = list(range(5, 25))
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter)).eval()
    assert (_logits(plain, ids) - _logits(peft_model, ids)).abs().max() < 1e-4

    baseline = run["root"] / "baseline.json"
    recorded = CliRunner().invoke(main, ["baseline", str(run["suite"]), "--adapter", str(adapter),
                                         "--out", str(baseline)])
    assert recorded.exit_code == 0, recorded.output
    gate = CliRunner().invoke(main, ["regress", str(run["suite"]), "--model", str(merged), "--baseline",
                                     str(baseline)])
    assert gate.exit_code == 0, gate.output
    assert "Regression gate passed" in gate.output
    # The gate merges an adapter exactly as export does: the exported model scores exactly as its adapter.
    rows = [line for line in gate.output.splitlines() if line.startswith("| ") and ("↑" in line or "↓" in line)]
    assert len(rows) == 4 and all("| +0 |" in row for row in rows), gate.output


def test_export_full_arm_and_refusals(run):
    from transformers import AutoModelForCausalLM

    full = run["root"] / "full-merged"
    result = CliRunner().invoke(main, ["export", str(run["out"]), "full", "--merged", str(full)])
    assert result.exit_code == 0, result.output
    source = AutoModelForCausalLM.from_pretrained(run["out"] / "arms" / "full" / "model")
    exported = AutoModelForCausalLM.from_pretrained(full)
    assert all((a == b).all() for a, b in zip(source.state_dict().values(), exported.state_dict().values()))

    taken = CliRunner().invoke(main, ["export", str(run["out"]), "lora", "--merged", str(full)])
    assert taken.exit_code == 2 and "not an empty directory" in taken.output
    unknown = CliRunner().invoke(main, ["export", str(run["out"]), "nope", "--merged", str(run["root"] / "y")])
    assert unknown.exit_code == 2 and "no arm named 'nope'" in unknown.output
