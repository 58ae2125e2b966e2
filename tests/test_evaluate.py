"""Evaluation numbers checked against independent computations on the tiny model (fp32)."""

from __future__ import annotations

import math

import pytest
import torch

from harness import models
from harness.backend import Example, ModelHandle, ModelSpec, TaskFormat
from harness.evaluate import Request, common_prefix_length, evaluate, run_requests
from harness.metrics import compute_all, exact_match_score, squad_normalize
from harness.prompts import encode_pair, encode_prompt, encode_target, end_of_turn_id, render_prompt

from .conftest import REVIEWS

TASK = TaskFormat(kind="classification", system="You classify sentiment.", labels=("negative", "positive"),
                  max_new_tokens=6, stop=())
EXAMPLES = tuple(Example(id=str(i), prompt=f"Review: {t}\nIs this review positive or negative?", target=y, label=y)
                 for i, (t, y) in enumerate(REVIEWS))


@pytest.fixture(scope="module")
def handle(tiny_model_dir):
    model, tok = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    return ModelHandle(model=model, tokenizer=tok)


def reference_logprob(model, tokenizer, task, shots, example, target):
    """log p(target + end of turn | prompt) from one plain full-sequence forward, no cache, no batch."""
    prompt, cont = encode_pair(tokenizer, task, shots, Example("x", example.prompt, target, target))
    ids = torch.tensor([prompt + cont], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.double()
    logp = torch.log_softmax(logits[0, len(prompt) - 1:-1], dim=-1).cpu()
    return float(logp.gather(-1, torch.tensor(cont)[:, None]).sum()), len(cont)


@pytest.mark.parametrize("shots", [0, 2])
def test_label_logprobs_and_perplexity_match_independent_computation(handle, shots):
    context = EXAMPLES[:shots]
    out = evaluate(ModelHandle(handle.model, handle.tokenizer, context=context), EXAMPLES, TASK, batch_tokens=200)
    total_nll, total_tokens = 0.0, 0
    for ex, row in zip(EXAMPLES, out.rows):
        for label in TASK.labels:
            ref, _ = reference_logprob(handle.model, handle.tokenizer, TASK, context, ex, label)
            assert row["label_logprobs"][label] == pytest.approx(ref, rel=1e-4, abs=1e-4)
        gold, n = reference_logprob(handle.model, handle.tokenizer, TASK, context, ex, ex.target)
        total_nll, total_tokens = total_nll - gold, total_tokens + n
    ppl = compute_all(["perplexity"], out.rows, TASK.labels)["perplexity"]
    assert ppl == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-4)


def test_batched_equals_one_at_a_time(handle):
    batched = evaluate(handle, EXAMPLES, TASK, batch_tokens=10_000)
    for ex, row in zip(EXAMPLES, batched.rows):
        alone = evaluate(handle, (ex,), TASK).rows[0]
        assert alone["prediction"] == row["prediction"]
        for label in TASK.labels:
            assert alone["label_logprobs"][label] == pytest.approx(row["label_logprobs"][label], abs=1e-5)


def test_evaluation_passes_the_cache_under_the_forward_name_this_transformers_takes(handle):
    """transformers 5.25 renamed the forward's past_key_values to cache and drops the old name in
    5.40: the deprecated spelling must not be what evaluation uses."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")
        evaluate(handle, EXAMPLES[:2], TASK, batch_tokens=10_000)


def test_greedy_matches_transformers_generate(handle):
    """Our cached decoding loop gives the same tokens as generate() run on each prompt alone."""
    tok = handle.tokenizer
    out = evaluate(handle, EXAMPLES[:4], TASK, batch_tokens=10_000)
    for ex, row in zip(EXAMPLES[:4], out.rows):
        prompt = tok(render_prompt(tok, TASK, (), ex), add_special_tokens=False,
                     return_tensors="pt").to(handle.model.device)
        with torch.no_grad():
            gen = handle.model.generate(**prompt, max_new_tokens=TASK.max_new_tokens, do_sample=False,
                                        eos_token_id=end_of_turn_id(tok), pad_token_id=tok.pad_token_id)
        text = tok.decode(gen[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        assert row["prediction"] == text


GEN_TASK = TaskFormat(kind="generation", system="You summarise reviews.", labels=None, max_new_tokens=7, stop=())


@pytest.fixture(scope="module")
def sharp_handle(tiny_model_dir):
    """The tiny model with its matrices scaled up: its greedy tokens depend on the context (the
    plain random model repeats one token whatever it sees, which would hide a wrong context)."""
    model, tok = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.mul_(40)
    return ModelHandle(model=model, tokenizer=tok)


@pytest.mark.parametrize("budget", [10_000, 60])
def test_generation_task_scores_the_target_in_the_prompt_pass_and_decodes_the_prompt_alone(sharp_handle, budget):
    """With one continuation (the gold target) it runs in the prompt's own forward; the target
    must still score as a separate computation does, and decoding must not see it: the tokens
    equal generate() on the prompt alone (no stop token, so all 7 are compared). Budget 60: the
    prompts of a decoding group run in several parts whose caches are joined for decoding."""
    tok = sharp_handle.tokenizer
    examples = tuple(Example(ex.id, ex.prompt, f"a {ex.label} review" * (1 + i % 3)) for i, ex in enumerate(EXAMPLES))
    out = evaluate(sharp_handle, examples, GEN_TASK, batch_tokens=budget)
    prompts = [encode_prompt(tok, render_prompt(tok, GEN_TASK, (), ex)) for ex in examples]
    requests = [Request(p, (encode_target(tok, ex.target),)) for p, ex in zip(prompts, examples)]
    decoded, _ = run_requests(sharp_handle.model, requests, 7, set(), tok.pad_token_id, budget, "test")
    generated_only, _ = run_requests(sharp_handle.model, [Request(p, ()) for p in prompts], 7, set(),
                                     tok.pad_token_id, budget, "test")
    assert [g for _, g in generated_only] == [g for _, g in decoded]
    for ex, row, prompt, (scores, generated) in zip(examples, out.rows, prompts, decoded):
        ref, n = reference_logprob(sharp_handle.model, tok, GEN_TASK, (), ex, ex.target)
        assert row["target_nll"] == pytest.approx(-ref, rel=1e-4, abs=1e-4) and row["target_tokens"] == n
        assert scores[0][0] == pytest.approx(ref, rel=1e-4, abs=1e-4)
        with torch.no_grad():
            gen = sharp_handle.model.generate(torch.tensor([prompt], device=sharp_handle.model.device),
                                              max_new_tokens=7, min_new_tokens=7, do_sample=False,
                                              pad_token_id=tok.pad_token_id)
        assert generated == gen[0, len(prompt):].tolist()


@pytest.mark.parametrize("budget", [10_000, 60])
def test_rows_that_stop_leave_the_decoding_batch_and_the_others_decode_unchanged(sharp_handle, budget, monkeypatch):
    """Each row's tokens depend on its own context only, so with stop ids every row must give its
    unstopped tokens up to the first stop id, however the batch shrinks around it."""
    from harness.kv_cache import GrowingLayer

    tok = sharp_handle.tokenizer
    prompts = [encode_prompt(tok, render_prompt(tok, GEN_TASK, (), ex)) for ex in EXAMPLES]
    requests = [Request(p, ()) for p in prompts]
    full = [g for _, g in run_requests(sharp_handle.model, requests, 7, set(), tok.pad_token_id, budget, "t")[0]]
    stops = {full[row][1 + row] for row in range(4)}     # rows 0-3 stop at different steps
    expected = [g[:next((i for i, t in enumerate(g) if t in stops), len(g))] for g in full]
    assert sum(len(g) < 7 for g in expected) >= len(expected) / 4 and any(len(g) == 7 for g in expected)
    selected = []
    original = GrowingLayer.batch_select_indices
    monkeypatch.setattr(GrowingLayer, "batch_select_indices",
                        lambda self, index: (selected.append(len(index)), original(self, index))[1])
    stopped = [g for _, g in run_requests(sharp_handle.model, requests, 7, stops, tok.pad_token_id, budget, "t")[0]]
    assert stopped == expected
    assert selected                  # the batch did shrink


def test_common_prefix_leaves_a_token_in_every_row():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4]]) == 2
    assert common_prefix_length([[1, 2], [1, 2, 3]]) == 1
    assert common_prefix_length([[5], [5]]) == 0


def test_uniform_logits_give_perplexity_equal_to_vocab_size(handle):
    model = handle.model
    vocab = model.config.vocab_size
    saved = model.lm_head.weight.detach().clone()
    try:
        with torch.no_grad():
            model.lm_head.weight.zero_()     # tied to the embeddings: restore below
        out = evaluate(handle, EXAMPLES[:3], TASK)
        assert compute_all(["perplexity"], out.rows, TASK.labels)["perplexity"] == pytest.approx(vocab, rel=1e-6)
    finally:
        with torch.no_grad():
            model.lm_head.weight.copy_(saved)


@pytest.mark.parametrize("prediction, reference, expected", [
    ("The Cat!", "cat", 1.0), ("an apple", "Apple.", 1.0), ("  positive ", "positive", 1.0),
    ("positive.", "negative", 0.0), ("the  big   dog", "big dog", 1.0),
])
def test_exact_match_uses_squad_normalisation(prediction, reference, expected):
    assert exact_match_score(prediction, reference) == expected


def test_squad_normalize_definition():
    assert squad_normalize("The quick, brown FOX!") == "quick brown fox"


def test_bf16_evaluation_runs_bf16_weights_and_gives_the_fp32_weights_back(handle):
    """bf16 evaluation runs bf16 copies of the weights (no per-forward casts) and restores the fp32
    weights afterwards, unchanged: a full fine-tune's small updates live in them."""
    from harness import evaluate as ev

    before = {n: p.detach().clone() for n, p in handle.model.named_parameters()}
    seen = set()
    layer = handle.model.model.layers[0].mlp.down_proj
    hook = layer.register_forward_pre_hook(lambda module, args: seen.add(module.weight.dtype))
    bf16 = ev.evaluate(handle, EXAMPLES, TASK, bf16=True).rows
    hook.remove()
    assert seen == {torch.bfloat16}
    assert all(p.dtype == torch.float32 and torch.equal(p, before[n]) for n, p in handle.model.named_parameters())
    fp32 = ev.evaluate(handle, EXAMPLES, TASK, bf16=False).rows
    diffs = [abs(a - b) for ra, rb in zip(bf16, fp32)
             for a, b in zip(ra["label_logprobs"].values(), rb["label_logprobs"].values())]
    assert 0 < max(diffs) < 0.1                      # bf16 ran, and stays close to fp32
