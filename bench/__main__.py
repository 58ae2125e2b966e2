"""python -m bench [--out bench.json]: harness vs the obvious alternatives, side by side in one process.

Parts (each prints as it finishes; all figures go to one JSON with versions and CPU flags):
  peak        the bf16 and fp32 matmul peak of this machine, measured here, and the bf16 peak again
              right before each part (this VM's speed drifts by 8-15% within an hour): a part's
              fractions of the peak use its own measurement
  scoring     target-token log-likelihood: harness vs a naive per-example loop vs lm-eval HFLM
  mc          multiple choice (the default general set) vs lm-eval HFLM
  generation  greedy decoding vs a text-generation pipeline called per example (fp32: identical)
  training    full / LoRA / QLoRA tokens/s vs TRL SFTTrainer with its defaults

Each headline pair (harness and the alternative its speedup is taken against) runs --repeats
times, alternated, and the fastest run of each side counts; every run's seconds are in the JSON.
The other figures (batch 1, the naive loop, the like-for-like runs) run once.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import click

from bench import common, generation, scoring, training

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")


def cpu_info() -> dict:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    import torch

    return {"model": name or platform.processor(), "flags": [f for f in FLAGS if f in flags],
            "threads": torch.get_num_threads()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("harness", "torch", "transformers", "peft", "bitsandbytes", "trl", "lm_eval"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _say(text: str) -> None:
    click.echo(text, err=True)


def _peak_now(size: int, before: str) -> float:
    """The bf16 matmul peak measured now, right before `before` (the part records it beside its figures)."""
    peak = round(common.matmul_peak("bfloat16", size), 1)
    _say(f"bf16 peak before {before}: {peak} GFLOP/s")
    return peak


def run_scoring(report, model, model_bf16, tok, params, limit, lm_eval_batches, repeats):
    """Two workloads: the zero-shot prompts and the 3-shot prompts of the headline suite."""
    _, data = common.load_suite_data("headline.yaml")
    report["scoring"] = {}
    for shots in (0, 3):
        requests, pairs = scoring.headline_requests(tok, data, limit, shots)
        part = report["scoring"][f"{shots}-shot prompts"] = _scoring_part(
            model, model_bf16, tok, params, requests, pairs, lm_eval_batches, repeats,
            _peak_now(report["peak_size"], f"scoring {shots}-shot prompts"))
        _say(f"scoring, {shots}-shot prompts: {json.dumps(part, indent=1)}")


def _scoring_part(model, model_bf16, tok, params, requests, pairs, lm_eval_batches, repeats, peak):
    """harness and lm-eval at its faster batch size run `repeats` times, alternated (common.fastest)."""
    total, target = scoring._request_tokens(requests)

    def ours_once():
        return scoring.harness_scores(model, tok, requests, True, params)

    def lm_eval_once(batch):
        _, encoded, figure = scoring.lm_eval_scores(model_bf16, tok, pairs, batch, params, total, target)
        return encoded, figure

    ours_runs = [ours_once()]
    naive, fig_n = scoring.naive_scores(model_bf16, requests, False, params)
    exact_ours, _ = scoring.harness_scores(model, tok, requests[:32], False, params)
    exact_naive, _ = scoring.naive_scores(model, requests[:32], False, params)
    lm_runs, same_ids = {batch: [lm_eval_once(batch)] for batch in lm_eval_batches}, None
    for encoded, _ in (runs[0] for runs in lm_runs.values()):
        same_ids = sum(list(c) + list(k) == r.prompt + list(r.continuations[0]) for (c, k), r in zip(encoded, requests))
    best_batch = min(lm_runs, key=lambda b: lm_runs[b][0][1].seconds) if lm_runs else None
    for _ in range(repeats - 1):
        ours_runs.append(ours_once())
        if best_batch is not None:
            lm_runs[best_batch].append(lm_eval_once(best_batch))
    ours, fig_h = common.fastest(ours_runs)
    lm_figures = {batch: common.fastest(runs)[1] for batch, runs in lm_runs.items()}
    figures = [fig_h, fig_n, *lm_figures.values()]
    best_lm, same = lm_figures.get(best_batch), None
    if lm_figures:      # lm-eval again at its best batch size, under harness's process settings
        same = scoring.lm_eval_scores(model_bf16, tok, pairs, best_batch, params, total, target, True)[2]
        figures.append(same)
    return {
        "requests": len(requests), "tokens": total, "target_tokens": target, "peak_gflops_bf16": peak,
        "figures": {f.name: f.describe(peak) for f in figures},
        "speedup_vs_naive": round(fig_n.seconds / fig_h.seconds, 2),
        "speedup_vs_lm_eval": round(best_lm.seconds / fig_h.seconds, 2) if best_lm else None,
        "speedup_vs_lm_eval_same_settings": round(same.seconds / fig_h.seconds, 2) if same else None,
        "lm_eval_same_token_ids": same_ids,
        "max_abs_logprob_diff_vs_separate_bf16": max(abs(a - b) for a, b in zip(ours, naive)),
        "max_abs_logprob_diff_vs_separate_fp32": max(abs(a - b) for a, b in zip(exact_ours, exact_naive)),
    }


def run_mc(report, model, model_bf16, tok, lm_eval_batch, limit, repeats):
    import dataclasses

    task = next(t for t in common.load_general().tasks if t.spec.kind == "multiple_choice")
    task = dataclasses.replace(task, items=task.items[:limit])
    ours_runs, their_runs = common.alternate(repeats, lambda: scoring.mc_harness(model, tok, task, True),
                                             lambda: scoring.mc_lm_eval(model_bf16, tok, task, lm_eval_batch))
    ours, seconds = min(ours_runs, key=lambda run: run[1])
    theirs, their_seconds = min(their_runs, key=lambda run: run[1])
    _, same_seconds = scoring.mc_lm_eval(model_bf16, tok, task, lm_eval_batch, same_settings=True)
    report["multiple_choice"] = {
        "items": len(task.items), "choices": sum(len(i["choices"]) for i in task.items),
        "harness_seconds": round(seconds, 3), f"lm_eval_batch{lm_eval_batch}_seconds": round(their_seconds, 3),
        "harness_runs_s": [round(run[1], 3) for run in ours_runs],
        f"lm_eval_batch{lm_eval_batch}_runs_s": [round(run[1], 3) for run in their_runs],
        "speedup_vs_lm_eval": round(their_seconds / seconds, 2),
        f"lm_eval_batch{lm_eval_batch}_harness_settings_seconds": round(same_seconds, 3),
        "speedup_vs_lm_eval_same_settings": round(same_seconds / seconds, 2),
        "same_predictions": sum(a == b for a, b in zip(ours, theirs)),
    }
    _say(f"multiple choice: {json.dumps(report['multiple_choice'], indent=1)}")


def run_generation(report, model, model_bf16, tok, limit, max_new, repeats):
    from harness.prompts import encode_prompt, render_prompt

    _, data = common.load_suite_data("headline.yaml")
    texts = [render_prompt(tok, data.task, (), e) for e in data.test[:limit]]
    prompts = [encode_prompt(tok, t) for t in texts]
    ours, fig_h = generation.harness_generate(model, tok, prompts, max_new, False)
    theirs, fig_p = generation.pipeline_generate(model, tok, texts, max_new)
    bf16_runs, pipeline_runs = common.alternate(
        repeats, lambda: generation.harness_generate(model, tok, prompts, max_new, True),
        lambda: generation.pipeline_generate(model_bf16, tok, texts, max_new))
    ours_bf16, fig_hb = common.fastest(bf16_runs)
    theirs_bf16, fig_pb = common.fastest(pipeline_runs)
    fig_pb.name = "pipeline loop (bf16)"
    _, fig_ps = generation.pipeline_generate(model, tok, texts, max_new, same_settings=True)
    _, fig_pbs = generation.pipeline_generate(model_bf16, tok, texts, max_new, same_settings=True)
    fig_pbs.name = "pipeline loop (bf16, harness's settings)"
    report["generation"] = {
        "examples": len(prompts), "max_new_tokens": max_new,
        "figures": {f.name: f.describe(0) for f in (fig_h, fig_p, fig_ps, fig_hb, fig_pb, fig_pbs)},
        "speedup_vs_pipeline_fp32": round(fig_p.seconds / fig_h.seconds, 2),
        "speedup_vs_pipeline_bf16": round(fig_pb.seconds / fig_hb.seconds, 2),
        "speedup_vs_pipeline_fp32_same_settings": round(fig_ps.seconds / fig_h.seconds, 2),
        "speedup_vs_pipeline_bf16_same_settings": round(fig_pbs.seconds / fig_hb.seconds, 2),
        "identical_predictions_fp32": sum(a.strip() == b.strip() for a, b in zip(ours, theirs)),
        "identical_predictions_bf16": sum(a.strip() == b.strip() for a, b in zip(ours_bf16, theirs_bf16)),
        "first_difference_fp32": next(({"harness": a, "pipeline": b} for a, b in zip(ours, theirs)
                                       if a.strip() != b.strip()), None),
    }
    _say(f"generation: {json.dumps(report['generation'], indent=1)}")


def run_training(report, spec, params, steps, batch, kinds, with_trl, repeats):
    _, data = common.load_suite_data("sentiment.yaml")
    peak = _peak_now(report["peak_size"], "training")
    out = {"steps": steps, "batch_size": batch, "examples": steps * batch, "peak_gflops_bf16": peak}
    for kind in kinds:
        def ours_once():
            common.fresh_start()
            return None, training.harness_train(kind, spec, data, steps, batch, params)

        def theirs_once():
            common.fresh_start()
            return None, training.trl_train(kind, spec, data, steps, batch, params)

        ours_runs, *their = common.alternate(repeats, ours_once, *([theirs_once] if with_trl else []))
        their_runs = their[0] if their else []
        ours = common.fastest(ours_runs)[1]
        out[kind] = {"harness": ours.describe(peak)}
        if with_trl:
            theirs = common.fastest(their_runs)[1]
            common.fresh_start()
            out[kind]["trl_defaults"] = theirs.describe(peak)
            same = training.trl_train(kind, spec, data, steps, batch, params, same_settings=True)
            out[kind]["trl_defaults_harness_settings"] = same.describe(peak)
            for key, figure in (("speedup_vs_trl", "trl_defaults"),
                                ("speedup_vs_trl_same_settings", "trl_defaults_harness_settings")):
                out[kind][key] = round(out[kind]["harness"]["tokens_per_s"] / out[kind][figure]["tokens_per_s"], 2)
        _say(f"training {kind}: {json.dumps(out[kind])}")
    if "lora" in kinds and "qlora" in kinds:
        out["qlora_vs_lora_speed"] = round(out["qlora"]["harness"]["tokens_per_s"] /
                                           out["lora"]["harness"]["tokens_per_s"], 2)
    report["training"] = out


@click.command()
@click.option("--model", "model_ref", default="builtin:smollm2-135m-instruct", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench.json"), show_default=True)
@click.option("--parts", default="scoring,mc,generation,training", show_default=True)
@click.option("--scoring-limit", type=int, default=None, help="First N headline test examples (default all).")
@click.option("--lm-eval-batch", "lm_eval_batches", multiple=True, type=int, default=(1, 16), show_default=True)
@click.option("--mc-limit", type=int, default=None, help="First N multiple-choice items (default all 360).")
@click.option("--gen-limit", type=int, default=48, show_default=True)
@click.option("--max-new-tokens", type=int, default=24, show_default=True)
@click.option("--train-steps", type=int, default=16, show_default=True)
@click.option("--train-batch", type=int, default=8, show_default=True)
@click.option("--train-kinds", default="full,lora,qlora", show_default=True)
@click.option("--no-trl", is_flag=True, help="Skip the TRL side of the training part.")
@click.option("--peak-size", type=int, default=2048, show_default=True, help="Matmul size for the peak.")
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True,
              help="Runs of each headline pair (harness and the alternative it is compared with), alternated; "
                   "the fastest run of each side counts, every run is listed.")
def main(model_ref, out, parts, scoring_limit, lm_eval_batches, mc_limit, gen_limit, max_new_tokens, train_steps,
         train_batch, train_kinds, no_trl, peak_size, repeats):
    import torch

    from harness.models import quiet_libraries

    quiet_libraries()
    parts = set(parts.split(","))
    report = {"versions": versions(), "cpu": cpu_info(), "repeats": repeats, "peak_size": peak_size,
              "peak_gflops": {d: round(common.matmul_peak(d, peak_size), 1) for d in ("bfloat16", "float32")}}
    _say(f"peak GFLOP/s: {report['peak_gflops']}")
    model, tok, spec = common.load_model(model_ref)
    params = common.param_count(model)
    report["model"] = {"ref": model_ref, "parameters": params}
    model_bf16 = common.load_model(model_ref)[0].to(torch.bfloat16)   # lm-eval's and the loops' bf16 path
    if "scoring" in parts:
        run_scoring(report, model, model_bf16, tok, params, scoring_limit, lm_eval_batches, repeats)
    if "mc" in parts:
        run_mc(report, model, model_bf16, tok, max(lm_eval_batches), mc_limit, repeats)
    if "generation" in parts:
        run_generation(report, model, model_bf16, tok, gen_limit, max_new_tokens, repeats)
    del model_bf16
    if "training" in parts:
        run_training(report, spec, params, train_steps, train_batch, train_kinds.split(","), not no_trl, repeats)
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    _say(f"wrote {out}")


if __name__ == "__main__":
    main()
