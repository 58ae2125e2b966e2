"""Batched scoring and greedy decoding over a shared prefix (the machinery under harness.evaluate).

A split's prompts share a prefix, run once; its key/value cache starts every row. Each batch runs
the rows' own suffixes right-padded after it (padding sits in the middle of the cache, masked
out, with explicit position ids), scores continuations from that state and decodes greedily.
"""

from __future__ import annotations

from harness.length_groups import FORWARD_OVERHEAD, length_groups
from harness.models import unwrapped

HEAD_CHUNK = 512       # positions per output-head call when scoring continuations
MAX_BATCH_ROWS = 64
GROUP_FACTOR = 4        # a decoding group's budget, in batch budgets (request_groups)
FINISHED_SHARE = 0.25   # finished rows leave a decoding batch once they are this share of it (_greedy)


def _parts(model):
    """(backbone, lm_head) for a plain or PEFT-wrapped causal LM."""
    lm = unwrapped(model)
    return getattr(lm, lm.base_model_prefix), lm.get_output_embeddings()


def cache_keyword(backbone) -> str:
    """The forward's name for the key/value cache: transformers 5.25 renamed past_key_values to
    cache and drops the old name in 5.40; earlier 5.x releases know only past_key_values."""
    import inspect

    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


def _device(model):
    return next(model.parameters()).device


class Scorer:
    """Holds the model pieces and the shared prefix cache for one split."""

    def __init__(self, model, prefix: list[int]):
        import torch

        self.torch = torch
        self.backbone, self.head = _parts(model)
        self.cache_keyword = cache_keyword(self.backbone)
        self.device = _device(model)
        self.prefix_len = len(prefix)
        self.prefix_cache = None
        if prefix:
            ids = torch.tensor([prefix], device=self.device)
            out = self.backbone(input_ids=ids, use_cache=True)
            self.prefix_cache = out.get("cache", out.get("past_key_values"))

    def new_cache(self, rows: int, reserve: int):
        """A cache for `rows` rows starting from the shared prefix, with room for `reserve` more tokens."""
        from harness.kv_cache import growing_cache

        layers = self.backbone.config.num_hidden_layers
        return growing_cache(layers, reserve, self.prefix_cache, rows)

    def step(self, ids, mask, positions, cache):
        """Run new tokens on top of `cache`; returns hidden states (B, T, H)."""
        out = self.backbone(input_ids=ids, attention_mask=mask, position_ids=positions,
                            use_cache=True, **{self.cache_keyword: cache})
        return out.last_hidden_state

    def logits(self, hidden):
        return self.head(hidden).float()

    def log_probs(self, hidden):
        return self.torch.log_softmax(self.logits(hidden), dim=-1)

    def target_log_probs(self, hidden, targets, valid):
        """log p(target) at the valid positions only, the output head run in chunks of positions:
        a (rows, positions, vocabulary) tensor of log-probs would be hundreds of MB per batch."""
        torch = self.torch
        out = torch.zeros(targets.shape, dtype=torch.float64, device=hidden.device)
        where = valid.nonzero(as_tuple=True)
        flat_hidden, flat_targets = hidden[where], targets[where]
        values = []
        for start in range(0, flat_targets.shape[0], HEAD_CHUNK):
            logits = self.logits(flat_hidden[start:start + HEAD_CHUNK])
            chosen = logits.gather(-1, flat_targets[start:start + HEAD_CHUNK, None])[:, 0]
            values.append((chosen - logits.logsumexp(dim=-1)).double())
        if values:
            out[where] = torch.cat(values)
        return out


def _filled(lengths: list[int], budget: int) -> list[list[int]]:
    """Rows longest first, in consecutive slices filled up to the budget's padded size."""
    out, batch, longest = [], [], 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        longest_if = max(longest, lengths[i])
        if batch and (longest_if * (len(batch) + 1) > budget or len(batch) >= MAX_BATCH_ROWS):
            out.append(batch)
            batch, longest_if = [], lengths[i]
        batch.append(i)
        longest = longest_if
    return out + [batch] if batch else out


def request_groups(lengths: list[int], budget: int, continuations: int, max_new: int) -> list[list[int]]:
    """The rows run_requests hands score_batch together, as index lists.

    Rows with at most one continuation that decode come as decoding groups, filled up to
    GROUP_FACTOR budgets: score_batch runs their prompts in parts within the budget and decodes
    them together, and a decoding step reads every weight once whatever the row count, so fewer,
    fuller groups decode in fewer steps; what grows is the group's key/value cache (4 x 4,096
    tokens of SmolLM2-135M's bf16 keys and values take 380 MB). Other rows are cut where padding
    costs more than another forward (harness.length_groups); a row with several continuations
    costs a forward per continuation as well as its prompt's."""
    if continuations <= 1 and max_new > 0:
        return _filled(lengths, budget * GROUP_FACTOR)
    forwards = 1 if continuations <= 1 else 1 + continuations
    return length_groups(lengths, FORWARD_OVERHEAD * forwards, budget, MAX_BATCH_ROWS)


def score_batch(scorer: Scorer, suffixes, continuations, max_new, stop_ids, pad_id, budget: int):
    """Per row: ([(sum logprob, n tokens) per continuation], generated ids, tokens run)."""
    if len(continuations[0]) <= 1:
        return _score_single(scorer, suffixes, [c[0] if c else [] for c in continuations], max_new, stop_ids,
                             pad_id, budget)
    torch = scorer.torch
    dev, n, P = scorer.device, len(suffixes), scorer.prefix_len
    S = max(len(s) for s in suffixes)
    lens = torch.tensor([len(s) for s in suffixes], device=dev)
    ids, mask, positions = _right_padded(scorer, suffixes, pad_id)
    cache = scorer.new_cache(n, S + max((len(c) for conts in continuations for c in conts), default=0) + max_new)
    hidden = scorer.step(ids, mask, positions, cache)
    first = scorer.log_probs(hidden[torch.arange(n), lens - 1])            # (n, V)

    scores = [[] for _ in range(n)]  # per row: (sum logprob, n tokens) for each continuation
    for j in range(len(continuations[0])):  # the same count for every row
        conts = [c[j] for c in continuations]
        lp = _score_continuation(scorer, conts, first, mask, P + lens, cache, pad_id)
        for r in range(n):
            scores[r].append(lp[r])
        _truncate(cache, P + S)

    generated = _greedy(scorer, first, mask, P + lens, cache, max_new, stop_ids)
    used = [len(s) + sum(len(c) for c in continuations[r]) + len(generated[r]) for r, s in enumerate(suffixes)]
    return list(zip(scores, generated, used))


def _right_padded(scorer: Scorer, rows: list[list[int]], pad_id: int):
    """(ids, mask over prefix + rows, positions) for rows right-padded to the longest, after the prefix."""
    torch = scorer.torch
    dev, n, P = scorer.device, len(rows), scorer.prefix_len
    S = max(len(r) for r in rows)
    ids = torch.full((n, S), pad_id, dtype=torch.long, device=dev)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
    lens = torch.tensor([len(r) for r in rows], device=dev)
    mask = torch.cat([torch.ones(n, P, dtype=torch.long, device=dev),
                      (torch.arange(S, device=dev)[None] < lens[:, None]).long()], dim=1)
    return ids, mask, P + torch.arange(S, device=dev)[None].expand(n, S)


def _score_single(scorer: Scorer, suffixes, conts, max_new, stop_ids, pad_id, budget: int):
    """At most one continuation per row (the gold target): it runs in the same forward as the
    prompt, right after it, instead of in a second pass over the cache. Decoding then masks the
    continuation out of the cache, as it masks padding, so it sees the prompt alone.

    The rows arrive as a decoding group (longest first): their prompts run in parts that fit the
    budget, each padded only to its own longest row, and the parts' caches are joined for one
    decoding loop. Each decoding step reads every weight once whatever the row count, so one loop
    over the whole group takes fewer steps than one loop per part (48 headline prompts, bf16:
    7.0-7.4 s -> 6.1-6.7 s); the parts are cut where padding costs more than another forward."""
    torch = scorer.torch
    dev, n, P = scorer.device, len(suffixes), scorer.prefix_len
    rows = [s + c[:-1] for s, c in zip(suffixes, conts)]
    parts = [list(range(n))]
    if max_new:
        parts = length_groups([len(r) for r in rows], budget=budget, max_rows=MAX_BATCH_ROWS)
    width = max(len(r) for r in rows)
    first, total, caches = None, torch.zeros(n, dtype=torch.float64, device=dev), []
    for part in parts:
        ids, mask, positions = _right_padded(scorer, [rows[i] for i in part], pad_id)
        caches.append(scorer.new_cache(len(part), width + max_new if len(parts) == 1 else ids.shape[1]))
        hidden = scorer.step(ids, mask, positions, caches[-1])
        lens = torch.tensor([len(suffixes[i]) for i in part], device=dev)
        part_first = scorer.log_probs(hidden[torch.arange(len(part)), lens - 1])            # (rows, V)
        first = part_first.new_empty(n, part_first.shape[1]) if first is None else first
        first[part] = part_first
        total[part] = _target_log_probs(scorer, hidden, part_first, [suffixes[i] for i in part],
                                        [conts[i] for i in part])
    cache = caches[0] if len(parts) == 1 else _joined_cache(caches, parts, P + width, max_new)
    lens = torch.tensor([len(s) for s in suffixes], device=dev)
    prompt_only = torch.cat([torch.ones(n, P, dtype=torch.long, device=dev),
                             (torch.arange(width, device=dev)[None] < lens[:, None]).long()], 1)
    generated = _greedy(scorer, first, prompt_only, P + lens, cache, max_new, stop_ids)
    return [([(float(total[r]), len(c))] if c else [], generated[r], len(s) + len(c) + len(generated[r]))
            for r, (s, c) in enumerate(zip(suffixes, conts))]


def _target_log_probs(scorer: Scorer, hidden, first, suffixes, conts):
    """log p(continuation) per row of a part whose rows hold the continuation after the prompt."""
    torch = scorer.torch
    rows, dev = hidden.shape[0], hidden.device
    if not any(conts):
        return torch.zeros(rows, dtype=torch.float64, device=dev)
    targets = torch.full(hidden.shape[:2], -1, dtype=torch.long, device=dev)
    for r, (s, c) in enumerate(zip(suffixes, conts)):
        targets[r, len(s): len(s) + len(c) - 1] = torch.tensor(c[1:], dtype=torch.long)
    firsts = torch.tensor([c[0] if c else 0 for c in conts], device=dev)
    return first[torch.arange(rows), firsts].double() + scorer.target_log_probs(hidden, targets, targets >= 0).sum(1)


def _joined_cache(caches, parts, length: int, reserve: int):
    """One cache for every row of the parts, `length` positions wide (each part's positions
    beyond its own width stay zero: they are masked, like padding), room for `reserve` more."""
    from harness.kv_cache import growing_cache

    rows = sum(len(p) for p in parts)
    joined = growing_cache(len(caches[0].layers), reserve)
    for index, layer in enumerate(joined.layers):
        pieces = [(part, cache.layers[index]) for part, cache in zip(parts, caches)]
        like = pieces[0][1].keys
        keys = like.new_zeros(rows, like.shape[1], length, like.shape[3])
        values = keys.clone()
        for part, source in pieces:
            keys[part, :, : source.keys.shape[2]] = source.keys
            values[part, :, : source.values.shape[2]] = source.values
        layer.update(keys, values)
    return joined


def _truncate(cache, length: int) -> None:
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def _score_continuation(scorer, conts, first, mask, start_pos, cache, pad_id):
    """Sum of log p(continuation | prompt) per row; the first token comes from `first`."""
    torch = scorer.torch
    n, dev = len(conts), scorer.device
    firsts = torch.tensor([c[0] for c in conts], device=dev)
    total = first[torch.arange(n), firsts].double()
    longest = max(len(c) for c in conts)
    if longest > 1:
        rest = torch.full((n, longest - 1), pad_id, dtype=torch.long, device=dev)
        targets = torch.full((n, longest - 1), -1, dtype=torch.long, device=dev)
        for r, c in enumerate(conts):
            rest[r, : len(c) - 1] = torch.tensor(c[:-1])
            targets[r, : len(c) - 1] = torch.tensor(c[1:])
        valid = targets >= 0
        step_mask = torch.cat([mask, valid.long()], dim=1)
        positions = start_pos[:, None] + torch.arange(longest - 1, device=dev)[None]
        hidden = scorer.step(rest, step_mask, positions, cache)
        total = total + scorer.target_log_probs(hidden, targets, valid).sum(dim=1)
    return [(float(total[r]), len(conts[r])) for r in range(n)]


def _greedy(scorer, first, mask, start_pos, cache, max_new, stop_ids):
    """Greedy tokens per row until a stop id or max_new. Finished rows leave the batch once a
    quarter of it has finished (FINISHED_SHARE): a decoding step costs with its rows, and one
    long answer would otherwise keep every finished row decoding to the end."""
    torch = scorer.torch
    dev = scorer.device
    token = first.argmax(dim=-1)
    out = [[] for _ in range(first.shape[0])]
    rows = list(range(first.shape[0]))      # the request row of each row still in the batch
    done = [False] * len(rows)
    for step in range(max_new):
        for i, value in enumerate(token.tolist()):
            if not done[i]:
                if value in stop_ids:
                    done[i] = True
                else:
                    out[rows[i]].append(value)
        if all(done) or step == max_new - 1:
            break
        live = [i for i, finished in enumerate(done) if not finished]
        if len(rows) - len(live) >= FINISHED_SHARE * len(rows):
            index = torch.tensor(live, device=dev)
            cache.batch_select_indices(index)
            mask, start_pos, token = mask[index], start_pos[index], token[index]
            rows, done = [rows[i] for i in live], [False] * len(live)
        mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=torch.long, device=dev)], dim=1)
        hidden = scorer.step(token[:, None], mask, (start_pos + step)[:, None], cache)
        # no softmax: the argmax is the same. max's indices, not argmax: the same first maximum, and
        # argmax over bf16 logits took 4.3 ms per step against 1.1 (48 rows x 49,152)
        token = scorer.head(hidden[:, -1]).max(dim=-1).indices
    return out
