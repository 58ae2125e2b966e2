"""Score one model handle on a split: log-likelihood of continuations and greedy generation.

One pass per batch serves every metric. Every prompt of a split starts with the same tokens
(chat header, system message, few-shot exemplars), so that shared prefix is run once and its
key/value cache reused by every row. Each batch then runs the rows' own suffixes (right-padded),
and from that state (a) scores each continuation (the label set, or the gold target) and
(b) decodes greedily. Padding sits in the middle of the cache, masked out, with explicit
position ids, so each row's numbers equal those of the row run alone (tested). We drive the
decoding loop ourselves because `generate()` cannot reuse a shared prefix cache across a
batch of different suffixes.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

from harness.allocator import keep_freed_memory
from harness.attention import fast_cpu_attention
from harness.backend import Example, ModelHandle, TaskFormat
from harness.progress import bar
from harness.prompts import encode_prompt, encode_target, end_of_turn_id, render_prompt

# Bump when a change to evaluation can change its numbers: cached evaluations are keyed by it.
EVAL_VERSION = 3    # 3: bf16 evaluation runs bf16 weights (was autocast over fp32 weights, fp32 decoding)
MAX_BATCH_ROWS = 64
HEAD_CHUNK = 512       # positions per output-head call when scoring continuations


@dataclass
class EvalOutput:
    rows: list[dict]
    seconds: float
    tokens: int          # prompt + continuation + generated tokens run through the model
    truncated: int = 0   # prompts cut to fit the model's context (eval.overlong: truncate)


def context_length(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


def fit_to_context(requests: list[Request], ids: list[str], limit: int | None, max_new: int,
                   policy: str) -> tuple[list[Request], int]:
    """Apply the overlong policy: error (naming the example) or truncate (keep the prefix shared by
    every prompt, then the prompt's last tokens: the question usually sits at the end)."""
    from harness.errors import DataError

    if not limit:
        return requests, 0
    head = common_prefix_length([r.prompt for r in requests])
    out, cut = [], 0
    for request, example_id in zip(requests, ids):
        budget = limit - max((len(c) for c in request.continuations), default=0) - max_new
        if len(request.prompt) <= budget:
            out.append(request)
            continue
        if policy != "truncate" or budget <= head + 1:
            raise DataError(f"example {example_id}: its prompt has {len(request.prompt)} tokens, over the "
                            f"{budget} that fit the model's context of {limit} with the answer",
                            "shorten it, or set eval.overlong: truncate in the suite")
        out.append(Request(request.prompt[:head] + request.prompt[len(request.prompt) - (budget - head):],
                           request.continuations))
        cut += 1
    return out, cut


def default_max_new_tokens(tokenizer, task: TaskFormat) -> int:
    if task.max_new_tokens:
        return task.max_new_tokens
    if task.labels:
        return max(len(encode_target(tokenizer, label)) for label in task.labels) + 1
    return 64


def common_prefix_length(sequences: list[list[int]]) -> int:
    """Length of the longest shared token prefix, leaving at least one token in every sequence."""
    first, limit = sequences[0], min(len(s) for s in sequences) - 1
    n = 0
    while n < limit and all(s[n] == first[n] for s in sequences):
        n += 1
    return n


def _parts(model):
    """(backbone, lm_head) for a plain or PEFT-wrapped causal LM."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(lm, lm.base_model_prefix), lm.get_output_embeddings()


def _device(model):
    return next(model.parameters()).device


@contextmanager
def weights_in_bf16(model, enabled: bool, frozen_only: bool = False):
    """For the length of a bf16 evaluation, the model's floating-point weights are bf16 copies.

    This is bf16 inference as lm-eval or vLLM run it (activations and residual stream in bf16).
    We measured the alternatives on a 2-core CPU with SmolLM2-135M, scoring 188 headline prompts:
    autocast over the fp32 weights 10.4 s (it re-casts every weight on every forward: a decode
    step was slower than fp32), autocast over weights cast once 9.4 s (the elementwise ops stay
    fp32 and every linear casts its input), bf16 weights 7.2 s. A weight rounds to the same bf16
    value as autocast would give it, so a full fine-tune's small updates count no less than under
    autocast; they stay in the fp32 weights, which come back afterwards. Buffers (the rotary
    frequencies) stay fp32; 4-bit weights are not floating point and are left alone.

    frozen_only: only weights that do not train (LoRA / QLoRA training runs the frozen base in
    bf16, as those recipes load it; the adapter stays fp32 under autocast).
    """
    import torch

    saved = []
    if enabled:
        for param in model.parameters():
            if param.dtype == torch.float32 and not (frozen_only and param.requires_grad):
                saved.append((param, param.data))
                param.data = param.data.to(torch.bfloat16)
    try:
        yield
    finally:
        for param, data in saved:
            param.data = data


class _Scorer:
    """Holds the model pieces and the shared prefix cache for one split."""

    def __init__(self, model, prefix: list[int]):
        import torch

        self.torch = torch
        self.backbone, self.head = _parts(model)
        self.device = _device(model)
        self.prefix_len = len(prefix)
        self.prefix_cache = None
        if prefix:
            ids = torch.tensor([prefix], device=self.device)
            out = self.backbone(input_ids=ids, use_cache=True)
            self.prefix_cache = out.past_key_values

    def new_cache(self, rows: int, reserve: int):
        """A cache for `rows` rows starting from the shared prefix, with room for `reserve` more tokens."""
        from harness.kv_cache import growing_cache

        layers = self.backbone.config.num_hidden_layers
        return growing_cache(layers, reserve, self.prefix_cache, rows)

    def step(self, ids, mask, positions, cache):
        """Run new tokens on top of `cache`; returns hidden states (B, T, H)."""
        out = self.backbone(input_ids=ids, attention_mask=mask, position_ids=positions,
                            past_key_values=cache, use_cache=True)
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


def _batches(order: list[int], lengths: list[int], budget: int):
    """Consecutive slices of `order` (sorted longest first) whose padded size fits the budget."""
    batch, longest = [], 0
    for i in order:
        longest_if = max(longest, lengths[i])
        if batch and (longest_if * (len(batch) + 1) > budget or len(batch) >= MAX_BATCH_ROWS):
            yield batch
            batch, longest_if = [], lengths[i]
        batch.append(i)
        longest = longest_if
    if batch:
        yield batch


@dataclass(frozen=True)
class Request:
    """One prompt to run: continuations to score (token ids) and whether to decode greedily."""

    prompt: list[int]
    continuations: tuple[list[int], ...]


def run_requests(model, requests: list[Request], max_new: int, stop_ids: set[int], pad_id: int,
                 batch_tokens: int, desc: str, bf16: bool = False) -> tuple[list[tuple[list, list[int]]], int]:
    """Per request: ([(sum logprob, n tokens) per continuation], generated ids); and tokens run.

    Every request must have the same number of continuations (0 is allowed: generation only).
    bf16: the model runs with bf16 weights for the call (weights_in_bf16); fp32 otherwise.
    """
    import torch

    prompts = [r.prompt for r in requests]
    prefix_len = common_prefix_length(prompts)
    suffixes = [p[prefix_len:] for p in prompts]
    out: list = [None] * len(requests)
    tokens = prefix_len
    with torch.inference_mode(), weights_in_bf16(model, bf16), keep_freed_memory(), fast_cpu_attention(model):
        scorer = _Scorer(model, prompts[0][:prefix_len])
        order = sorted(range(len(requests)), key=lambda i: -len(suffixes[i]))
        lengths = [len(s) + max((len(c) for c in requests[i].continuations), default=0) + max_new
                   for i, s in enumerate(suffixes)]
        for batch in bar(list(_batches(order, lengths, batch_tokens)), desc=desc, unit="batch"):
            scored = _score_batch(scorer, [suffixes[i] for i in batch],
                                  [requests[i].continuations for i in batch], max_new, stop_ids, pad_id)
            for i, (cont_scores, generated, used) in zip(batch, scored):
                out[i] = (cont_scores, generated)
                tokens += used
    return out, tokens


def evaluate(handle: ModelHandle, examples: tuple[Example, ...], task: TaskFormat,
             batch_tokens: int = 4096, desc: str = "eval", bf16: bool = False,
             overlong: str = "error") -> EvalOutput:
    """Score the task's examples: the label set (classification) or the gold target, and decode."""
    tok = handle.tokenizer
    start = time.perf_counter()
    if task.labels:
        label_ids = tuple(encode_target(tok, label) for label in task.labels)
    requests = [Request(encode_prompt(tok, render_prompt(tok, task, handle.context, ex)),
                        label_ids if task.labels else (encode_target(tok, ex.target),))
                for ex in examples]
    stop_ids = {end_of_turn_id(tok), tok.eos_token_id}
    max_new = default_max_new_tokens(tok, task)
    requests, truncated = fit_to_context(requests, [ex.id for ex in examples], context_length(handle.model),
                                         max_new, overlong)
    scored, tokens = run_requests(handle.model, requests, max_new, stop_ids, tok.pad_token_id, batch_tokens,
                                  desc, bf16)
    rows = [_row(ex, task, cont_scores, tok.decode(generated, skip_special_tokens=True))
            for ex, (cont_scores, generated) in zip(examples, scored)]
    return EvalOutput(rows=rows, seconds=time.perf_counter() - start, tokens=tokens, truncated=truncated)


def _score_batch(scorer: _Scorer, suffixes, continuations, max_new, stop_ids, pad_id):
    if len(continuations[0]) == 1:
        return _score_single(scorer, suffixes, [c[0] for c in continuations], max_new, stop_ids, pad_id)
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


def _right_padded(scorer: _Scorer, rows: list[list[int]], pad_id: int):
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


def _score_single(scorer: _Scorer, suffixes, conts, max_new, stop_ids, pad_id):
    """One continuation per row (the gold target): it runs in the same forward as the prompt,
    right after it, instead of in a second pass over the cache (a second call through every
    layer, each attending to the whole cache again). Decoding then masks the continuation out
    of the cache, as it masks padding, so it sees the prompt alone."""
    torch = scorer.torch
    dev, n, P = scorer.device, len(suffixes), scorer.prefix_len
    lens = torch.tensor([len(s) for s in suffixes], device=dev)
    ids, mask, positions = _right_padded(scorer, [s + c[:-1] for s, c in zip(suffixes, conts)], pad_id)
    cache = scorer.new_cache(n, ids.shape[1] + max_new)
    hidden = scorer.step(ids, mask, positions, cache)
    first = scorer.log_probs(hidden[torch.arange(n), lens - 1])            # (n, V)
    targets = torch.full(ids.shape, -1, dtype=torch.long, device=dev)
    for r, (s, c) in enumerate(zip(suffixes, conts)):
        targets[r, len(s): len(s) + len(c) - 1] = torch.tensor(c[1:], dtype=torch.long)
    firsts = torch.tensor([c[0] for c in conts], device=dev)
    total = first[torch.arange(n), firsts].double() + scorer.target_log_probs(hidden, targets, targets >= 0).sum(1)
    prompt_only = torch.cat([mask[:, :P], (torch.arange(ids.shape[1], device=dev)[None] < lens[:, None]).long()], 1)
    generated = _greedy(scorer, first, prompt_only, P + lens, cache, max_new, stop_ids)
    return [([(float(total[r]), len(c))], generated[r], len(s) + len(c) + len(generated[r]))
            for r, (s, c) in enumerate(zip(suffixes, conts))]


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
    torch = scorer.torch
    n, dev = first.shape[0], scorer.device
    token = first.argmax(dim=-1)
    out = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    for step in range(max_new):
        for r in range(n):
            if not done[r]:
                if int(token[r]) in stop_ids:
                    done[r] = True
                else:
                    out[r].append(int(token[r]))
        if bool(done.all()) or step == max_new - 1:
            break
        mask = torch.cat([mask, torch.ones(n, 1, dtype=torch.long, device=dev)], dim=1)
        hidden = scorer.step(token[:, None], mask, (start_pos + step)[:, None], cache)
        token = scorer.head(hidden[:, -1]).argmax(dim=-1)   # no softmax: the argmax is the same
    return out


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    for stop in stops:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text.strip()


def _row(example: Example, task: TaskFormat, cont_scores, generated: str) -> dict:
    row = {"id": example.id, "prompt": example.prompt, "target": example.target,
           "prediction": cut_at_stop(generated, task.stop)}
    if task.labels:
        logprobs = {label: lp for label, (lp, _) in zip(task.labels, cont_scores)}
        gold_lp, gold_n = cont_scores[task.labels.index(example.label)]
        row.update(label=example.label, ll_prediction=max(logprobs, key=logprobs.get),
                   label_logprobs=logprobs, target_nll=-gold_lp, target_tokens=gold_n)
    else:
        lp, count = cont_scores[0]
        row.update(target_nll=-lp, target_tokens=count)
    return row
