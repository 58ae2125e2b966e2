"""Attention for evaluation on a CPU: plain matrix products for query blocks up to 128 long
(decoding steps, continuations, most prompt blocks), SDPA's flash kernel for longer ones.

Measured on 2 cores (AMD EPYC, avx512_bf16), SmolLM2's 9 query / 3 key-value heads, bf16, the
median of 8 alternated runs (this machine's timings move by 10-40% between minutes):
  48 rows x 1 query x 150 keys (a decoding step): flash kernel 3.4 ms, products 0.35 ms;
  64 rows x 12 queries x 150 keys (a continuation): 3.9 ms vs 2.4 ms;
  31 rows x 100 queries x 136 keys (a prompt block): 15.5 ms vs 11.3 ms (another run 12.1 / 9.2);
  16 rows x 250 queries x 286 keys: 25.7 ms vs 29.0 ms, so the kernel keeps those: the products
  compute the masked half of a causal block too.
Zero-shot headline scoring (188 requests) went from 14.4-16.6 s to 13.5-15.1 s, alternated
(threshold 16 against 128). The products fold each key/value head's query heads into one
matrix (no repeated keys). Models with attention extras (soft-capping, sinks) keep
transformers' SDPA.
"""

from __future__ import annotations

from contextlib import contextmanager

from harness.models import unwrapped

NAME = "harness_cpu"
SHORT_QUERY = 128       # query blocks up to this length use the matrix products...
SCORES_BYTES = 64 * 2 ** 20   # ...when their score matrix fits here (the flash kernel never holds one)


def _buffer_length(t) -> int | None:
    """The sequence length of the buffer that t, a (B, H, used, D) tensor, is the start of, when t
    is a narrowed view of a contiguous (B, H, capacity, D) buffer, as the growing cache hands out."""
    batch, heads, used, dim = t.shape
    capacity, rest = divmod(t.stride(1), dim)
    if (t.storage_offset() or t.stride(3) != 1 or t.stride(2) != dim or rest or capacity <= used
            or t.stride(0) != heads * capacity * dim):
        return None
    if t.untyped_storage().nbytes() < batch * heads * capacity * dim * t.element_size():
        return None
    return capacity


def _over_whole_buffers(key, value, mask, queries: int):
    """(key, value, mask) over the whole buffers when key and value are narrowed views of them.

    oneDNN multiplies only contiguous or transposed operands and copies any other first: on the
    growing cache's views that copy was a fifth of a decoding step (48 headline rows, bf16). Over
    the whole buffer nothing is copied; the tail, masked out, costs a few more products. The
    growing cache keeps its tail finite, so masked probabilities (0) times it add nothing."""
    import torch

    capacity = _buffer_length(key)
    used = key.shape[2]
    if capacity is None or _buffer_length(value) != capacity or (mask is not None and mask.shape[-1] != used):
        return key, value, mask
    if mask is None:
        mask = torch.ones(1, 1, queries, used, dtype=torch.bool, device=key.device)
    if mask.dtype == torch.bool:
        tail = mask.new_zeros(*mask.shape[:-1], capacity - used)
    else:
        tail = mask.new_full((*mask.shape[:-1], capacity - used), torch.finfo(mask.dtype).min)
    whole = (key.shape[0], key.shape[1], capacity, key.shape[3])
    return key.as_strided(whole, key.stride()), value.as_strided(whole, value.stride()), torch.cat([mask, tail], -1)


def _folded_attention(query, key, value, mask, scaling: float):
    """softmax(q k^T * scaling + mask) v with grouped-query heads folded into the rows: (B, T, Hq, D).

    As transformers' eager attention computes it: scores scaled in the query's dtype, the softmax
    taken in fp32 (the CPU kernel widens bf16 inside). Scaled and masked in place, softmax
    straight to the value's dtype: an fp32 copy of the scores and three more passes over them
    took 40% longer (31 rows x 100 queries x 136 keys, bf16: 9-17 ms against 7-11)."""
    import torch

    batch, q_heads, length, dim = query.shape
    if mask is None and length > 1:    # no mask given: causal, the queries being the last positions
        keys = key.shape[2]
        mask = torch.ones(length, keys, dtype=torch.bool, device=query.device).tril(keys - length)[None, None]
    key, value, mask = _over_whole_buffers(key, value, mask, length)
    kv_heads, keys = key.shape[1], key.shape[2]
    group = q_heads // kv_heads
    scores = torch.matmul(query.reshape(batch, kv_heads, group * length, dim), key.transpose(-1, -2))
    scores = scores.view(batch, kv_heads, group, length, keys).mul_(scaling)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores.masked_fill_(~mask[:, :, None], torch.finfo(scores.dtype).min)
        else:
            scores.add_(mask[:, :, None].to(scores.dtype))
    probs = torch.softmax(scores, dim=-1).view(batch, kv_heads, group * length, keys)
    return torch.matmul(probs, value).view(batch, q_heads, length, dim).transpose(1, 2).contiguous()


def cpu_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                          scaling: float | None = None, **kwargs):
    import torch

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = kwargs.get("softcap") is None and kwargs.get("s_aux") is None and kwargs.get("position_bias") is None
    scores_bytes = query.shape[0] * query.shape[1] * query.shape[2] * key.shape[2] * query.element_size()
    if query.shape[2] <= SHORT_QUERY and scores_bytes <= SCORES_BYTES and plain and not (module.training and dropout):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return _folded_attention(query, key, value, attention_mask, scale), None
    if plain and attention_mask is not None and query.shape[1] != key.shape[1]:
        # the flash kernel takes grouped-query heads and the mask directly (transformers repeats
        # every key/value head first whenever there is a mask): 9 ms vs 17 ms per layer
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout if module.training else 0.0,
            scale=scaling, enable_gqa=True)
        return out.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    def mask(*args, **kwargs):      # SDPA's boolean mask, always built (never "use is_causal instead")
        return sdpa_mask(*args, **{**kwargs, "allow_is_causal_skip": False})

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, cpu_attention_forward)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, mask)


@contextmanager
def fast_cpu_attention(model):
    """For the length of an evaluation call on a CPU, the model attends through cpu_attention_forward
    (its previous attention implementation comes back afterwards)."""
    lm = unwrapped(model)
    config = getattr(lm, "config", None)
    before = getattr(config, "_attn_implementation", None)
    on_cpu = next(lm.parameters()).device.type == "cpu"
    # architectures that do not dispatch through transformers' attention interface keep their own
    pluggable = getattr(lm, "_supports_attention_backend", False)
    if not on_cpu or not pluggable or before not in ("sdpa", "eager", None):
        yield
        return
    _register()
    lm.set_attn_implementation(NAME)
    try:
        yield
    finally:
        lm.set_attn_implementation(before or "sdpa")
