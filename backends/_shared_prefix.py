"""The tokens every row of a training micro-batch opens with run once, not once per row.

A suite's training rows share their chat template, system prompt and the prompt's first words:
26 of the sentiment suite's 69 tokens on average (SmolLM2's template). The batch runs as one
forward with that prefix as an extra first row and every other row cut to what follows it; in
each layer the rows attend to the prefix row's keys and values (broadcast) before their own.
Autograd sums the rows' gradients through the broadcast, so the loss and every gradient are those
of the whole rows, up to float rounding. The same idea as evaluation's shared prefix
(harness/batch_scoring.py), here with gradients.

One forward, not a forward of the prefix and then one of the rest: oneDNN packs each weight for
every matrix product, whatever its row count, and a second forward over 26 positions paid that
again for every linear (SmolLM2-135M LoRA on 2 cores: ~130 ms of matrix products for 26 tokens).

Only where it is exact and pays: a prefix of at least MIN_PREFIX tokens that stops before every
row's first predicted position, on models that attend through transformers' attention interface
with no sliding window and no extras (soft-capping, sinks), without gradient checkpointing (a
recomputed forward would run outside the layout) and without DDP/FSDP.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

from harness.models import unwrapped

NAME = "harness_shared_prefix"
KEYS = {"input_ids", "attention_mask", "position_ids", "labels", "logits_to_keep"}    # TargetOnlyCollator's
# Below this, the extra row's padding and attention cost more than the prefix saves.
MIN_PREFIX = 8
# The prefix length of the batch being run (0: rows are plain, the attention is transformers' eager).
_SHARED: ContextVar[int] = ContextVar("harness_shared_prefix", default=0)


def shared_prefix_length(inputs: dict) -> int:
    """How many leading tokens all rows of a left-padded TargetOnlyCollator batch share, stopping
    before the last prompt token of the row with the shortest prompt (its logits predict a target)."""
    import torch

    ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
    lengths = mask.sum(-1)
    before_targets = lengths - (labels != -100).sum(-1) - 1
    most = int(before_targets.min())
    if most < MIN_PREFIX or ids.shape[0] < 2 or set(inputs) != KEYS:
        return 0
    starts = ids.shape[1] - lengths                          # left padding: row r starts at its start
    columns = starts[:, None] + torch.arange(most, device=ids.device)
    heads = ids.gather(1, columns)
    agree = (heads == heads[:1]).all(0).long()
    shared = int(agree.cumprod(0).sum())
    return shared if shared >= MIN_PREFIX else 0


def with_prefix_row(batch: dict) -> tuple[dict, int]:
    """(the batch laid out for prefix_row_attention, the shared prefix's length), or (the batch, 0)
    where it shares no prefix or the layout would run more positions than the whole rows (one
    long row alone, say). Row 0 is the prefix, left-padded to the width of the rest (or the rest to
    the prefix's, if that is longer); its labels are all ignored and its positions count from 0.
    The other rows keep what follows the prefix, their position ids and labels (they still end at
    the last column)."""
    import torch

    shared = shared_prefix_length(batch)
    ids, mask, positions, labels = (batch[key] for key in ("input_ids", "attention_mask", "position_ids", "labels"))
    rows, width = ids.shape
    rest = mask.sum(-1) - shared
    wide = max(int(rest.max()), shared)
    if not shared or (rows + 1) * wide >= rows * width:
        return batch, 0
    columns = torch.arange(wide, device=ids.device)
    own = (columns[None, :] >= wide - rest[:, None]).to(mask.dtype)
    # A short row's masked columns still hold its prefix tokens (or padding): no key sees them, and
    # the labels of their (wasted) positions are -100.
    cut = lambda t: t[:, -wide:]     # noqa: E731 - wide <= width: the prefix is shorter than every row
    start = width - int(mask[0].sum())          # every row opens with the prefix: row 0's will do
    prefix = torch.nn.functional.pad(ids[0, start:start + shared], (wide - shared, 0))[None]
    prefix_mask = (columns >= wide - shared).to(mask.dtype)[None]
    prefix_positions = (columns - (wide - shared)).clamp(min=0)[None]
    return {**batch, "input_ids": torch.cat([prefix, cut(ids)]), "attention_mask": torch.cat([prefix_mask, own]),
            "position_ids": torch.cat([prefix_positions, cut(positions)]),
            "labels": torch.cat([labels.new_full((1, labels.shape[1]), -100), labels])}, shared


def shares_prefixes(model, checkpointing: bool, distributed: bool) -> bool:
    """Whether this training can run shared prefixes once. Not on a GPU yet: there the model keeps
    SDPA, and this layout's eager attention has not been measured against it."""
    import torch

    if torch.cuda.is_available():
        return False
    lm = unwrapped(model)
    config = lm.config.get_text_config(decoder=True) if hasattr(lm.config, "get_text_config") else lm.config
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    plain = all(getattr(config, name, None) is None for name in
                ("sliding_window", "attn_logit_softcapping", "final_logit_softcapping"))
    return (not checkpointing and not distributed and plain and layer_types == {"full_attention"}
            and getattr(lm, "_supports_attention_backend", False))


def prefix_row_attention(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0,
                         **kwargs):
    """transformers' eager attention, where row 0 holds the shared prefix (in its last columns)
    and every other row also attends to those keys, before its own."""
    import torch
    from transformers.models.llama.modeling_llama import eager_attention_forward

    shared = _SHARED.get()
    if not shared:
        return eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    if kwargs.get("sinks") is not None or kwargs.get("softcap") is not None:   # shares_prefixes keeps these out
        raise NotImplementedError("a shared training prefix with attention sinks or soft-capping")
    rows, _, length, _ = query.shape
    # transformers' eager mask for a causal model is always built (never skipped as "causal")
    attention_mask = attention_mask.expand(rows, -1, -1, -1)
    head, _ = eager_attention_forward(module, query[:1], key[:1], value[:1], attention_mask[:1], scaling, dropout)
    seen = rows - 1
    keys = torch.cat([key[:1, :, -shared:].expand(seen, -1, -1, -1), key[1:]], 2)
    values = torch.cat([value[:1, :, -shared:].expand(seen, -1, -1, -1), value[1:]], 2)
    own = attention_mask[1:]
    mask = torch.cat([own.new_zeros(seen, 1, length, shared), own], -1)
    rest, _ = eager_attention_forward(module, query[1:], keys, values, mask, scaling, dropout)
    return torch.cat([head, rest]), None


def attend_with_shared_prefix(model) -> None:
    """The model attends through prefix_row_attention (eager attention for batches without a
    shared prefix); backends._sft.attention_for puts evaluation's attention back afterwards."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, prefix_row_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    lm = unwrapped(model)
    lm.set_attn_implementation(NAME)


@contextmanager
def running_shared(shared: int):
    """For the length of one forward: the batch's row 0 is a prefix of `shared` tokens."""
    token = _SHARED.set(shared)
    try:
        yield
    finally:
        _SHARED.reset(token)
