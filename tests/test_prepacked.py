"""bf16 evaluation on a CPU multiplies by weights packed once: the same numbers, and only where it may."""

from __future__ import annotations

import pytest
import torch

from harness import models, prepacked
from harness.backend import ModelSpec
from harness.evaluate import Request, run_requests, weights_in_bf16

pytestmark = pytest.mark.skipif(not prepacked._can_pack(), reason="this CPU has no oneDNN bf16 products")


def _packed_modules(model) -> int:
    return sum("forward" in vars(m) for m in model.modules())


def _run(model, tok):
    torch.manual_seed(0)
    prompts = [[5, 6, 7] + torch.randint(8, 60, (n,)).tolist() for n in (9, 4, 12, 7)]
    requests = [Request(p, ([11, 12, 13],)) for p in prompts]
    out, _ = run_requests(model, requests, 6, set(), tok.pad_token_id, 64, "test", bf16=True)
    return out


def test_packed_linears_give_the_plain_products_bit_for_bit(tiny_model_dir, monkeypatch):
    model, tok = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    seen = []
    original = prepacked.prepacked_linears

    def counting(model, enabled=True):
        context = original(model, enabled)

        class Counting:
            def __enter__(self):
                context.__enter__()
                seen.append(_packed_modules(model))

            def __exit__(self, *exc):
                return context.__exit__(*exc)
        return Counting()

    monkeypatch.setattr("harness.evaluate.prepacked_linears", counting)
    packed = _run(model, tok)
    assert seen == [linears] and _packed_modules(model) == 0       # every linear, for the call only
    monkeypatch.setattr(prepacked, "_can_pack", lambda: False)
    monkeypatch.setattr("harness.evaluate.prepacked_linears", original)
    assert _run(model, tok) == packed


def test_no_packing_in_fp32_or_beyond_the_memory_share(tiny_model_dir, monkeypatch):
    model, _ = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    with prepacked.prepacked_linears(model):
        assert _packed_modules(model) == 0                  # fp32 weights: transformers' own products
    with weights_in_bf16(model, True):
        with prepacked.prepacked_linears(model):
            assert _packed_modules(model) > 0
        monkeypatch.setattr(prepacked, "MEMORY_SHARE", 1e-12)
        with prepacked.prepacked_linears(model):
            assert _packed_modules(model) == 0
