"""Target-token scoring and multiple choice: harness vs a naive per-example loop vs lm-eval's HFLM.

All three score the same requests: the headline suite's test prompts (chat template applied)
with their gold headline as the continuation, and the default general set's multiple-choice
items. All run bf16 weights: harness its own way (bf16 copies of the fp32 weights for the call,
its default on a CPU with fast bf16); the naive loop and lm-eval get the model cast to bfloat16.
Agreement with separate scoring is checked in fp32, where it must hold to 1e-3 (bf16 rounding
differs with the batch's shape, so bf16 numbers of the same request differ by up to ~1 nat).
lm-eval also runs once more under the process settings harness applies around its own
evaluation (bench.common.harness_settings), for a like-for-like figure.
"""

from __future__ import annotations

from contextlib import nullcontext

from bench.common import BATCH_TOKENS, Figure, harness_settings, timed


def headline_requests(tokenizer, data, limit: int | None, shots: int = 0):
    """(harness Requests, (context text, continuation text) pairs) for the same examples; with
    shots, the exemplars the few-shot arm would use precede every prompt."""
    from backends.prompt import choose_shots
    from harness.evaluate import Request
    from harness.prompts import encode_prompt, encode_target, render_prompt

    exemplars = choose_shots(data.train, shots, data.task.labels, data.seed) if shots else ()
    end = tokenizer.convert_ids_to_tokens(encode_target(tokenizer, "")[-1])
    requests, texts = [], []
    for example in data.test[:limit]:
        prompt = render_prompt(tokenizer, data.task, exemplars, example)
        requests.append(Request(encode_prompt(tokenizer, prompt), (encode_target(tokenizer, example.target),)))
        texts.append((prompt, example.target + end))
    return requests, texts


def _request_tokens(requests) -> tuple[int, int]:
    total = sum(len(r.prompt) + sum(len(c) for c in r.continuations) for r in requests)
    return total, sum(len(c) for r in requests for c in r.continuations)


def harness_scores(model, tokenizer, requests, bf16: bool, params: int, batch_tokens: int = BATCH_TOKENS):
    from harness.evaluate import run_requests

    seconds: dict = {}
    with timed(seconds, "run"):
        out, _ = run_requests(model, requests, 0, set(), tokenizer.pad_token_id, batch_tokens, "bench", bf16)
    total, target = _request_tokens(requests)
    return [lp for (scores, _) in out for lp, _ in scores], Figure("harness", seconds["run"], target, 2 * params * total)


def naive_scores(model, requests, bf16: bool, params: int):
    """One forward per (prompt, continuation) pair, log-softmax over every position, as the
    fine-tuning guides write it."""
    import torch

    seconds: dict = {}
    values = []
    with timed(seconds, "run"), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for request in requests:
            for cont in request.continuations:
                ids = torch.tensor([request.prompt + cont])
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
                positions = torch.arange(len(request.prompt) - 1, ids.shape[1] - 1)
                values.append(float(logp[positions, ids[0, positions + 1]].double().sum()))
    total, target = _request_tokens(requests)
    return values, Figure("naive loop", seconds["run"], target, 2 * params * total)


def lm_eval_scores(model_bf16, tokenizer, pairs, batch_size: int, params: int, total_tokens: int, target_tokens: int,
                   same_settings: bool = False):
    """lm-eval's HFLM.loglikelihood on the same (context, continuation) texts; also the token ids
    it used, to check the requests are the same as ours."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model_bf16, tokenizer=tokenizer, batch_size=batch_size)
    instances = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
                 for i, pair in enumerate(pairs)]
    seconds: dict = {}
    with timed(seconds, "run"), harness_settings(model_bf16) if same_settings else nullcontext():
        out = lm.loglikelihood(instances, disable_tqdm=True)
    encoded = [lm._encode_pair(context, cont) for context, cont in pairs]
    name = f"lm-eval HFLM (batch {batch_size}" + (", harness's settings)" if same_settings else ")")
    return [lp for lp, _ in out], encoded, Figure(name, seconds["run"], target_tokens, 2 * params * total_tokens)


def mc_harness(model, tokenizer, task, bf16: bool):
    from harness.general import _multiple_choice

    seconds: dict = {}
    with timed(seconds, "run"):
        rows = _multiple_choice(model, tokenizer, task, BATCH_TOKENS, bf16)
    return [int(r["ll_prediction"]) for r in rows], seconds["run"]


def mc_lm_eval(model_bf16, tokenizer, task, batch_size: int, same_settings: bool = False):
    """The same items as lm-eval's multiple-choice requests: one loglikelihood per choice."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from harness.backend import Example, TaskFormat
    from harness.prompts import render_prompt

    plain = TaskFormat(kind="generation", system=None, labels=None, max_new_tokens=None, stop=())
    lm = HFLM(pretrained=model_bf16, tokenizer=tokenizer, batch_size=batch_size)
    instances, owners = [], []
    for item in task.items:
        context = render_prompt(tokenizer, plain, (), Example("q", item["question"], ""))  # as harness.general
        for choice in item["choices"]:
            instances.append(Instance(request_type="loglikelihood", doc={}, arguments=(context, choice),
                                      idx=len(instances)))
            owners.append(item["id"])
    seconds: dict = {}
    with timed(seconds, "run"), harness_settings(model_bf16) if same_settings else nullcontext():
        out = lm.loglikelihood(instances, disable_tqdm=True)
    predictions, start = [], 0
    for item in task.items:
        scores = [lp for lp, _ in out[start:start + len(item["choices"])]]
        predictions.append(max(range(len(scores)), key=scores.__getitem__))
        start += len(item["choices"])
    return predictions, seconds["run"]
