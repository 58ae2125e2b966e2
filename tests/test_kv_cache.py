"""The growing key/value cache: same contents as transformers' DynamicCache, without a copy per step."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from harness.kv_cache import growing_cache


def _chunks(seed: int, rows: int = 3):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(rows, 2, n, 4, generator=gen), torch.randn(rows, 2, n, 4, generator=gen)) for n in (5, 1, 1, 3)]


def test_growing_cache_holds_what_dynamic_cache_holds_and_writes_in_place():
    ours, theirs = growing_cache(layers=1, reserve=4), DynamicCache()
    pointers = set()
    for keys, values in _chunks(0):
        k1, v1 = ours.update(keys, values, 0)
        k2, v2 = theirs.update(keys, values, 0)
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
        pointers.add(k1.data_ptr())
    assert ours.get_seq_length() == theirs.get_seq_length() == 10
    # 5 tokens + a reserve of 4 held the next two; the 3-token update outgrew it once (doubling).
    assert len(pointers) == 2


def test_crop_keeps_the_buffer_and_later_updates_overwrite_the_cropped_tokens():
    cache = growing_cache(layers=1, reserve=8)
    (first_k, first_v), (second_k, second_v), *_ = _chunks(1)
    cache.update(first_k, first_v, 0)
    before = cache.layers[0].keys.data_ptr()
    cache.update(second_k, second_v, 0)
    cache.crop(-1)
    replacement = torch.full_like(second_k, 7.0)
    keys, _ = cache.update(replacement, replacement, 0)
    assert keys.data_ptr() == before and keys.shape[-2] == 6
    assert torch.equal(keys[..., :5, :], first_k) and torch.equal(keys[..., 5:, :], replacement)


def test_prefix_rows_start_from_the_shared_prefix():
    prefix = DynamicCache()
    keys, values = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    prefix.update(keys, values, 0)
    cache = growing_cache(layers=1, reserve=2, prefix=prefix, rows=3)
    assert cache.get_seq_length() == 4
    assert all(torch.equal(cache.layers[0].keys[r], keys[0]) for r in range(3))


def test_selecting_rows_keeps_them_and_their_room_to_grow():
    ours, theirs = growing_cache(layers=1, reserve=4), DynamicCache()
    (keys, values), (step_k, step_v), *_ = _chunks(2)
    ours.update(keys, values, 0)
    theirs.update(keys, values, 0)
    rows = torch.tensor([2, 0])
    ours.batch_select_indices(rows)
    theirs.batch_select_indices(rows)
    selected = ours.layers[0].keys.data_ptr()
    k1, v1 = ours.update(step_k[rows], step_v[rows], 0)
    k2, v2 = theirs.update(step_k[rows], step_v[rows], 0)
    assert torch.equal(k1, k2) and torch.equal(v1, v2)
    assert k1.data_ptr() == selected          # the next token went into the selected buffer, no regrowth


def test_the_room_to_grow_is_zeros_so_attention_may_read_it_masked():
    cache = growing_cache(layers=1, reserve=6)
    keys, values = torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4)
    cache.update(keys, values, 0)
    layer = cache.layers[0]
    assert layer._keys_buffer.shape[2] == 11
    assert torch.equal(layer._keys_buffer[:, :, 5:], torch.zeros(2, 2, 6, 4))
    assert torch.equal(layer._values_buffer[:, :, 5:], torch.zeros(2, 2, 6, 4))
