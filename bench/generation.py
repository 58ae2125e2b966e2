"""Greedy generation: harness's batched decoding vs a text-generation pipeline called once per
example (the loop the fine-tuning guides write). Both in fp32, where the predictions must be
identical token for token, and harness again in its default mode on this CPU (bf16 prompts)."""

from __future__ import annotations

from contextlib import nullcontext

from bench.common import BATCH_TOKENS, Figure, harness_settings, timed


def harness_generate(model, tokenizer, prompts: list[list[int]], max_new: int, bf16: bool):
    from harness.evaluate import Request, run_requests
    from harness.prompts import end_of_turn_id

    requests = [Request(p, ()) for p in prompts]
    stop_ids = {end_of_turn_id(tokenizer), tokenizer.eos_token_id}
    seconds: dict = {}
    with timed(seconds, "run"):
        out, _ = run_requests(model, requests, max_new, stop_ids, tokenizer.pad_token_id, BATCH_TOKENS, "bench", bf16)
    texts = [tokenizer.decode(generated, skip_special_tokens=True) for _, generated in out]
    tokens = sum(len(generated) for _, generated in out)
    return texts, Figure("harness" + (" (bf16 prompts)" if bf16 else ""), seconds["run"], tokens)


def pipeline_generate(model, tokenizer, prompt_texts: list[str], max_new: int, same_settings: bool = False):
    import torch
    from transformers import pipeline

    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer, device=model.device)
    seconds: dict = {}
    texts, tokens = [], 0
    with timed(seconds, "run"), torch.inference_mode(), harness_settings(model) if same_settings else nullcontext():
        for text in prompt_texts:
            out = pipe(text, max_new_tokens=max_new, do_sample=False, return_full_text=False)
            texts.append(out[0]["generated_text"])
            tokens += len(tokenizer(out[0]["generated_text"], add_special_tokens=False)["input_ids"])
    return texts, Figure("pipeline loop" + (" (harness's settings)" if same_settings else ""), seconds["run"], tokens)
