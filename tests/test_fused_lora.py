"""While adapters train, each LoRA update is added inside lora_B's product: PEFT's numbers, fewer passes."""

from __future__ import annotations

import pytest
import torch

from backends._fused_lora import fused_lora_updates
from harness import models
from harness.backend import ModelSpec


def _lora_model(tiny_model_dir, dropout: float = 0.0, quantize_4bit: bool = False):
    from peft import LoraConfig, get_peft_model

    model, _ = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"),
                           quantize_4bit=quantize_4bit, compute_dtype="bfloat16")
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    for name, param in model.named_parameters():    # lora_B starts at zero: give it values to check
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return model


def _loss_and_grads(model, autocast: bool):
    torch.manual_seed(1)
    ids = torch.randint(5, 60, (3, 12))
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def _addmm_calls(model, autocast: bool) -> int:
    with torch.profiler.profile() as prof:
        _loss_and_grads(model, autocast)
    return sum(1 for event in prof.events() if event.name == "aten::addmm")


@pytest.mark.parametrize(("autocast", "quantize_4bit"), [(False, False), (True, False), (True, True)],
                         ids=["fp32", "bf16 autocast", "4-bit base (QLoRA)"])
def test_fused_updates_give_peft_loss_and_gradients_and_end_with_the_block(tiny_model_dir, autocast, quantize_4bit):
    model = _lora_model(tiny_model_dir, quantize_4bit=quantize_4bit)
    adapted = sum(1 for name, _ in model.named_modules() if name.endswith(".lora_A"))
    plain_loss, plain_grads = _loss_and_grads(model, autocast)
    assert _addmm_calls(model, autocast) == 0
    with fused_lora_updates(model) as layers:
        assert layers == adapted
        assert _addmm_calls(model, autocast) >= adapted        # a fused product per adapted linear (autocast
        #                                                      # shows its own addmm event over the inner one)
        fused_loss, fused_grads = _loss_and_grads(model, autocast)
    assert _addmm_calls(model, autocast) == 0                  # PEFT's own forward is back
    tolerance = 1e-5 if not autocast else 2e-2
    assert fused_loss == pytest.approx(plain_loss, abs=tolerance)
    assert plain_grads.keys() == fused_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        scale = grad.abs().max().item() + 1e-12
        assert (fused_grads[name] - grad).abs().max().item() <= tolerance * max(scale, 1.0), name


def test_an_adapter_with_dropout_keeps_peft_forward(tiny_model_dir):
    model = _lora_model(tiny_model_dir, dropout=0.1)
    with fused_lora_updates(model):
        assert _addmm_calls(model, autocast=False) == 0
