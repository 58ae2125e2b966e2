"""Export a trained arm of a run for serving: one self-contained model directory (safetensors).

The adapters of a run (RUN/arms/<arm>/adapter) are already standard PEFT directories:
`PeftModel.from_pretrained(base_model, "RUN/arms/lora/adapter")`. `export_merged` folds an adapter
into the base weights (`merge_and_unload`) or takes a full fine-tune's weights as they are, and
writes them with the base model's tokenizer (and chat template): a plain transformers model that
`AutoModelForCausalLM.from_pretrained` loads without peft. QLoRA adapters were trained on the
4-bit base; they are merged into the full-precision base, the usual practice.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from harness.backend import ModelSpec
from harness.errors import UsageError


def _base_spec(results) -> ModelSpec:
    """The run's base model: its resolved directory if it is still there, else its reference again.
    Remote code is never run (trust_remote_code stays False)."""
    from harness import models

    path = results.model.get("path")
    if path and Path(path).is_dir():
        return replace(models.resolve(path), ref=results.model["ref"])
    return models.resolve(results.model["ref"], Path(results.suite.get("path", ".")).parent)


def arm_artifact(run_dir: Path, arm: str) -> tuple[object, Path]:
    from harness.results import read_results

    results = read_results(run_dir)
    if arm not in results.arms:
        raise UsageError(f"{run_dir}: no arm named {arm!r}", f"arms: {', '.join(results.arms)}")
    result = results.arms[arm]
    if result.status != "ok" or not result.artifact:
        why = "it failed" if result.status != "ok" else "it trains nothing (a prompt arm is the base model)"
        raise UsageError(f"{run_dir}: arm {arm!r} has no trained weights to export: {why}")
    artifact = run_dir / result.artifact
    if not artifact.is_dir():
        raise UsageError(f"{artifact}: the arm's artifact is missing")
    return results, artifact


def export_merged(run_dir: Path, arm: str, out: Path) -> Path:
    """Write the arm's merged model to `out` (which must not exist, or be empty); return `out`."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness import models
    from harness.candidate import _refuse_pickles

    results, artifact = arm_artifact(run_dir, arm)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--merged {out}: exists and is not an empty directory", "choose a new directory")
    _refuse_pickles(artifact, False, [])
    base = _base_spec(results)
    model, tokenizer = models.load(base)
    if (artifact / "adapter_config.json").exists():
        from peft import PeftModel

        with models.library_deprecations_quiet():
            model = PeftModel.from_pretrained(model, str(artifact), is_trainable=False, local_files_only=True)
        model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(artifact), dtype=torch.float32, trust_remote_code=False,
                                                     use_safetensors=True, local_files_only=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)          # readers see the whole model or nothing
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
