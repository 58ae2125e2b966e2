"""Every registered backend honours the contract of harness/backend.py (tiny model, 2 steps)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from backends._shared_prefix import MIN_PREFIX
from harness import registry
from harness.backend import Example, ModelSpec, TaskFormat, TrainData
from harness.evaluate import evaluate
from harness.prompts import encode_target

from .conftest import REVIEWS

TASK = TaskFormat(kind="classification", system="You classify sentiment.", labels=("negative", "positive"),
                  max_new_tokens=4, stop=())
EXAMPLES = tuple(Example(id=str(i), prompt=f"Review: {t}", target=y, label=y) for i, (t, y) in enumerate(REVIEWS))


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def options_for(backend_cls):
    fields = backend_cls.Options.model_fields
    wanted = {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-2, "shots": 2}
    return backend_cls.Options(**{k: v for k, v in wanted.items() if k in fields})


@pytest.mark.parametrize("name", registry.names())
def test_backend_conformance(name, tiny_model_dir, tmp_path, monkeypatch):
    backend_cls = registry.get(name)
    assert backend_cls.name == name
    assert backend_cls.Options.model_config.get("extra") == "forbid"
    assert all(f.description for f in backend_cls.Options.model_fields.values())

    base_files = tree_digest(tiny_model_dir)
    base_weights = load_file(str(tiny_model_dir / "model.safetensors"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    workdir = tmp_path / "work"
    spec = ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32")

    handle = backend_cls(options_for(backend_cls)).train(spec, TrainData(EXAMPLES[:8], TASK, seed=0), workdir)

    # nothing written outside the workdir, base weights on disk untouched
    assert tree_digest(tiny_model_dir) == base_files
    assert list(cwd.iterdir()) == []
    assert {p.name for p in tmp_path.iterdir()} <= {"cwd", "work"}

    # the handle generates and scores
    out = evaluate(handle, EXAMPLES[8:], TASK)
    assert len(out.rows) == 4
    assert all(math.isfinite(lp) for r in out.rows for lp in r["label_logprobs"].values())
    assert all(isinstance(r["prediction"], str) for r in out.rows)

    stats = handle.stats
    assert stats.total_params > 0 and stats.peak_memory_bytes > 0
    model_weights = {k.replace("base_model.model.", "").replace(".base_layer", ""): v.cpu()
                     for k, v in handle.model.state_dict().items()}
    if handle.artifact_path is None:                       # prompt arm: no weight changes
        assert len(handle.context) == 2
        assert stats.trainable_params == 0 and stats.steps == 0
        for key, value in base_weights.items():
            assert torch.equal(model_weights[key], value), key
        return

    assert stats.steps == 2 and stats.seconds > 0 and stats.tokens > 0
    # every row opens with the chat template and system prompt: the forwards ran that once per batch
    assert 0 < stats.computed_tokens < stats.tokens - 2 * 3 * MIN_PREFIX
    # 2 steps x 4 rows = exactly one pass over the 8 training examples
    assert stats.target_tokens == sum(len(encode_target(handle.tokenizer, ex.target)) for ex in EXAMPLES[:8])
    assert 0 < stats.trainable_params <= stats.total_params and stats.artifact_bytes > 0
    assert len(stats.loss_curve) == 2 and all(math.isfinite(loss) for _, loss in stats.loss_curve)
    assert Path(handle.artifact_path).is_relative_to(workdir)
    adapter = (Path(handle.artifact_path) / "adapter_config.json").exists()
    if adapter:
        saved = load_file(Path(handle.artifact_path) / "adapter_model.safetensors")
        assert saved and all("lora_" in k for k in saved), "the adapter holds only LoRA weights"
        assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items()), \
            "LoRA B matrices start at zero and must have moved"
        # evaluation runs the adapter folded into the weights: only the adapted projections differ
        for key in [k for k in base_weights if "proj" not in k]:
            assert torch.equal(model_weights[key].float(), base_weights[key].float()), key
    else:
        changed = [k for k, v in base_weights.items() if not torch.equal(model_weights[k], v)]
        assert len(changed) >= len(base_weights) // 2
