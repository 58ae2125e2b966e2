"""harness.attention: the CPU attention evaluation runs with equals SDPA's, and is put back after."""

from __future__ import annotations

import pytest
import torch

from harness import models
from harness.attention import NAME, SHORT_QUERY, _folded_attention, fast_cpu_attention
from harness.backend import ModelSpec


@pytest.mark.parametrize("queries", [1, 5, SHORT_QUERY])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_folded_grouped_query_attention_equals_sdpa(queries, dtype):
    torch.manual_seed(0)
    keys = queries + 24
    q = torch.randn(3, 6, queries, 16, dtype=dtype)
    k, v = torch.randn(3, 2, keys, 16, dtype=dtype), torch.randn(3, 2, keys, 16, dtype=dtype)
    mask = torch.ones(3, 1, queries, keys, dtype=torch.bool).tril(keys - queries)
    mask[1, :, :, 3:9] = False                                 # padding in the middle, as evaluation lays it
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    got = _folded_attention(q, k, v, mask, 16 ** -0.5)
    assert got.shape == (3, queries, 6, 16)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(got.transpose(1, 2).float(), expected.float(), atol=tolerance)
    causal = _folded_attention(q, k, v, None, 16 ** -0.5)       # no mask: the queries are the last positions
    expected_causal = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=torch.ones(queries, keys, dtype=torch.bool).tril(keys - queries), enable_gqa=True)
    assert torch.allclose(causal.transpose(1, 2).float(), expected_causal.float(), atol=tolerance)


@pytest.mark.parametrize("route", ["products", "flash kernel (longer blocks)", "flash kernel (big score matrix)"])
def test_model_logits_are_unchanged_and_the_implementation_comes_back(tiny_model_dir, monkeypatch, route):
    from harness import attention

    if route == "flash kernel (longer blocks)":
        monkeypatch.setattr(attention, "SHORT_QUERY", 16)
    if route == "flash kernel (big score matrix)":
        monkeypatch.setattr(attention, "SCORES_BYTES", 1024)
    model, _ = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    model.set_attn_implementation("sdpa")
    ids = torch.randint(5, 100, (2, 30))
    mask = torch.ones_like(ids)
    mask[0, 20:] = 0
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        expected_step = model(input_ids=ids[:, :1], attention_mask=mask[:, :1]).logits
        with fast_cpu_attention(model):
            assert model.config._attn_implementation == NAME
            with torch.profiler.profile() as prof:
                got = model(input_ids=ids, attention_mask=mask).logits
            got_step = model(input_ids=ids[:, :1], attention_mask=mask[:, :1]).logits   # the short branch
    assert model.config._attn_implementation == "sdpa"
    flash = any("flash_attention" in event.name for event in prof.events())
    assert flash == (route != "products")
    valid = mask.bool()
    assert torch.allclose(got[valid], expected[valid], atol=1e-5)
    assert torch.allclose(got_step, expected_step, atol=1e-5)


def test_a_model_without_the_attention_interface_keeps_its_own(tiny_model_dir):
    model, _ = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    model.set_attn_implementation("sdpa")
    model._supports_attention_backend = False       # as for architectures that predate the interface
    with fast_cpu_attention(model):
        assert model.config._attn_implementation == "sdpa"


def test_attention_over_the_growing_cache_multiplies_its_buffer_without_copying_it():
    """The cache hands attention a narrowed view of a buffer with room to grow; oneDNN copies such
    an operand before multiplying unless attention takes the whole buffer with the tail masked."""
    from harness.kv_cache import growing_cache

    torch.manual_seed(0)
    cache = growing_cache(layers=1, reserve=8)
    chunk = lambda n: torch.randn(4, 2, n, 16, dtype=torch.bfloat16)  # noqa: E731
    cache.update(chunk(30), chunk(30), 0)
    key, value = cache.update(chunk(1), chunk(1), 0)
    assert key.shape[2] == 31 and not key.is_contiguous()      # 31 used of a 38-token buffer
    query = torch.randn(4, 6, 1, 16, dtype=torch.bfloat16)
    mask = torch.ones(4, 1, 1, 31, dtype=torch.bool)
    mask[1, :, :, 3:9] = False
    with torch.profiler.profile(record_shapes=True) as prof:
        got = _folded_attention(query, key, value, mask, 16 ** -0.5)
    cache_sizes = {key.numel(), key.numel() // 31 * 38}
    copies = [e.input_shapes for e in prof.events() if e.name == "aten::copy_"
              and any(shape and torch.Size(shape).numel() in cache_sizes for shape in e.input_shapes)]
    assert copies == []
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key.contiguous(), value.contiguous(), attn_mask=mask, enable_gqa=True)
    assert torch.allclose(got.transpose(1, 2).float(), expected.float(), atol=2e-2)
    causal = _folded_attention(query, key, value, None, 16 ** -0.5)   # one query, no mask: every key
    expected = torch.nn.functional.scaled_dot_product_attention(query, key.contiguous(), value.contiguous(),
                                                                enable_gqa=True)
    assert torch.allclose(causal.transpose(1, 2).float(), expected.float(), atol=2e-2)
