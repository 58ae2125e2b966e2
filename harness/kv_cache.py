"""A key/value cache that grows in place, for evaluation's batched scoring and greedy decoding.

transformers' DynamicCache appends each step's keys and values with torch.cat, which copies the
whole cache of every layer on every decoding step. Decoding 24 tokens for 48 headline prompts in
fp32 on 2 cores, that copying was 43% of the time (6.5 s of 15 s under the profiler). Here each
layer writes into a buffer with room for the tokens still to come (`reserve`) and hands attention
a view of its filled part; the buffer is reallocated (doubling) only when it runs out, or when the
layer's tensors were replaced behind its back (crop keeps the view, so it keeps the buffer).
A buffer's tail past the filled part is zeros, or tokens a crop left behind: always finite, so
attention may multiply over the whole buffer with the tail masked out (harness.attention).
"""

from __future__ import annotations

from transformers.cache_utils import Cache, DynamicLayer


class GrowingLayer(DynamicLayer):
    def __init__(self, reserve: int):
        super().__init__()
        self.reserve = reserve
        self._keys_buffer = self._values_buffer = None

    def _fits(self, length: int, batch: int) -> bool:
        buffer = self._keys_buffer
        return (buffer is not None and length <= buffer.shape[-2] and buffer.shape[0] == batch
                and self.keys.data_ptr() == buffer.data_ptr() and self.values.data_ptr() == self._values_buffer.data_ptr())

    def _grow(self, length: int, like):
        import torch

        old = self.get_seq_length()
        grown = self._keys_buffer is not None and self._keys_buffer.shape[0] == like.shape[0]
        capacity = max(length + self.reserve, 2 * self._keys_buffer.shape[-2] if grown else 0)
        shape = (*like.shape[:-2], capacity, like.shape[-1])
        keys = torch.empty(shape, dtype=like.dtype, device=like.device)
        values = torch.empty(shape, dtype=like.dtype, device=like.device)
        if old:
            keys[..., :old, :] = self.keys
            values[..., :old, :] = self.values
        keys[..., length:, :] = 0      # the tail stays finite (see the module's docstring)
        values[..., length:, :] = 0
        self._keys_buffer, self._values_buffer = keys, values

    def batch_select_indices(self, indices) -> None:
        """Keep only these rows (decoding drops the finished ones): one copy, room to grow kept."""
        length = self.get_seq_length()
        if not (length and self._fits(length, self.keys.shape[0])):
            return super().batch_select_indices(indices)     # a replaced layer: the next update regrows
        self._keys_buffer = self._keys_buffer.index_select(0, indices)
        self._values_buffer = self._values_buffer.index_select(0, indices)
        self.keys = self._keys_buffer[..., :length, :]
        self.values = self._values_buffer[..., :length, :]

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        old = self.get_seq_length()
        length = old + key_states.shape[-2]
        if not (old and self._fits(length, key_states.shape[0])):
            self._grow(length, key_states)
        self._keys_buffer[..., old:length, :] = key_states
        self._values_buffer[..., old:length, :] = value_states
        self.keys = self._keys_buffer[..., :length, :]
        self.values = self._values_buffer[..., :length, :]
        return self.keys, self.values


def growing_cache(layers: int, reserve: int, prefix=None, rows: int = 1) -> Cache:
    """A cache of `layers` growing layers; with `prefix` (a cache of one row), every one of `rows`
    rows starts from its keys and values."""
    cache = Cache(layers=[GrowingLayer(reserve) for _ in range(layers)])
    if prefix is not None:
        for layer, source in zip(cache.layers, prefix.layers):
            layer.update(source.keys.expand(rows, -1, -1, -1), source.values.expand(rows, -1, -1, -1))
    return cache
