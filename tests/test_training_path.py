"""The shared training call's inputs: the target-only batch gives exactly the textbook loss."""

from __future__ import annotations

import pytest
import torch

from backends._sft import TargetOnlyCollator
from harness import models
from harness.backend import ModelSpec
from harness.errors import RefusedArtifact


def test_target_only_batch_loss_equals_per_row_full_logits_loss(tiny_model_dir):
    model, tok = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    rows = [([5, 6, 7, 8, 9, 10, 11], 2), ([12, 13, 14], 1), ([20, 21, 22, 23, 24], 3)]
    batch = TargetOnlyCollator(tok.pad_token_id)(
        [{"input_ids": ids, "target_len": n} for ids, n in rows])
    assert batch["logits_to_keep"] == 4 and batch["labels"].shape == (3, 4)
    batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    with torch.no_grad():
        loss = model(**batch).loss
        total, count = 0.0, 0
        for ids, n in rows:   # textbook: full logits, unpadded, loss on the last n tokens only
            logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0].cpu()
            logp = torch.log_softmax(logits[-n - 1:-1], dim=-1)
            total -= float(logp.gather(-1, torch.tensor(ids[-n:])[:, None]).sum())
            count += n
    assert float(loss) == pytest.approx(total / count, rel=1e-5)


def test_left_padding_and_positions():
    batch = TargetOnlyCollator(pad_id=0)([{"input_ids": [7, 8, 9], "target_len": 1},
                                          {"input_ids": [4, 5], "target_len": 1}])
    assert batch["input_ids"].tolist() == [[7, 8, 9], [0, 4, 5]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 9], [-100, 5]]


def test_pickle_only_model_directory_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    with pytest.raises(RefusedArtifact, match="only pickle weights"):
        models.resolve(str(tmp_path))


def test_relative_model_path_is_found_beside_the_suite(tmp_path, tiny_model_dir):
    link = tmp_path / "models" / "tiny"
    link.parent.mkdir()
    link.symlink_to(tiny_model_dir)
    spec = models.resolve("models/tiny", base_dir=tmp_path)
    assert spec.path == str(link.resolve())


@pytest.mark.skipif(torch.cuda.is_available(), reason="eager attention is the CPU training choice")
def test_cpu_training_runs_eager_attention_and_evaluation_goes_back_to_sdpa(tiny_model_dir, tmp_path, monkeypatch):
    from transformers.models.llama import modeling_llama

    from backends.lora import LoraBackend
    from harness.backend import TrainData

    from .test_backends_conformance import EXAMPLES, TASK

    calls = {"eager": 0}
    original = modeling_llama.eager_attention_forward

    def counting(*args, **kwargs):
        calls["eager"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(modeling_llama, "eager_attention_forward", counting)
    spec = ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32")
    options = LoraBackend.Options(max_steps=1, batch_size=2)
    handle = LoraBackend(options).train(spec, TrainData(EXAMPLES[:4], TASK, seed=0), tmp_path / "work")
    assert calls["eager"] > 0                                  # the training forward ran eager attention
    base = handle.model.get_base_model() if hasattr(handle.model, "get_base_model") else handle.model
    assert base.config._attn_implementation == "sdpa"          # evaluation runs SDPA
