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
from harness.batch_scoring import Scorer, request_groups, score_batch
from harness.backend import Example, ModelHandle, TaskFormat
from harness.prepacked import prepacked_linears
from harness.progress import bar
from harness.prompts import encode_prompt, encode_target, end_of_turn_id, render_prompt

# Bump when a change to evaluation can change its numbers: cached evaluations are keyed by it.
EVAL_VERSION = 6    # 6: matrix-product attention for query blocks up to 128, over the cache's
#    whole buffer, softmax straight to bf16 (the rounding moves)
# 5: batches cut by harness.length_groups, finished rows leave decoding batches
#    (bf16 rounding moves with the batch shapes)
# 4: CPU attention via harness.attention, gold target folded into the prompt pass
# 3: bf16 evaluation runs bf16 weights (was autocast over fp32 weights, fp32 decoding)


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
    with torch.inference_mode(), weights_in_bf16(model, bf16), prepacked_linears(model, bf16), keep_freed_memory(), \
            fast_cpu_attention(model):
        scorer = Scorer(model, prompts[0][:prefix_len])
        lengths = [len(s) + max((len(c) for c in requests[i].continuations), default=0) + max_new
                   for i, s in enumerate(suffixes)]
        continuations = len(requests[0].continuations)
        groups = request_groups(lengths, batch_tokens, continuations, max_new)
        for batch in bar(list(groups), desc=desc, unit="batch"):
            scored = score_batch(scorer, [suffixes[i] for i in batch], [requests[i].continuations for i in batch],
                                 max_new, stop_ids, pad_id, batch_tokens)
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
