"""Fingerprints: what must be equal for a candidate's scores to be paired with a baseline's.

Every fingerprint is a short string (a sha256 of content, or a readable setting), keyed by name:

  suite               the suite's name
  task                the task definition (prompt, system, target, labels, generation settings)
  data.test           the formatted test examples (ids, prompts, targets): covers the file, eval.limit
                      and the templates, whatever the source format
  general.<task>      a general task's definition and items
  base_model          the base model's weights (every tensor's bytes, by name) and its config
  tokenizer           the tokenizer (its full serialisation) and special tokens
  chat_template       the chat template text
  decoding.*          greedy decoding, max new tokens, stop strings, evaluation precision, what
                      happens to a prompt longer than the model's context (eval.overlong), and
                      harness's evaluation version (EVAL_VERSION: it moves when batching or kernels
                      change the numbers, e.g. bf16 rounding with the batch shapes)

The candidate's own hash (`adapter` or `model`: its config and weight files) is recorded too, but
it is what changes between a baseline and a candidate, so it never makes them incomparable.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.backend import Example

CANDIDATE_KEYS = ("adapter", "model")


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_sha256(directory: Path, patterns: tuple[str, ...]) -> str:
    """One hash over the named files of a directory (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for path in sorted({p for pattern in patterns for p in directory.glob(pattern) if p.is_file()}):
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def weights_sha256(model) -> str:
    """Every tensor of the state dict (name, dtype, shape, bytes) and the config: independent of how
    the checkpoint was sharded or where it came from. Tied tensors are hashed once."""
    import torch

    digest = hashlib.sha256()
    seen = {}
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if key in seen:
            digest.update(f"tied:{seen[key]}".encode())
            continue
        seen[key] = name
        digest.update(tensor.view(torch.uint8).numpy().data if tensor.numel() else b"")
    config = model.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures"):
        config.pop(volatile, None)
    digest.update(sha256_json(config).encode())
    return digest.hexdigest()


def tokenizer_fingerprints(tokenizer) -> dict[str, str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    specials = {"special": tokenizer.special_tokens_map, "pad": tokenizer.pad_token,
                "bos": tokenizer.bos_token, "eos": tokenizer.eos_token}
    return {"tokenizer": sha256_json([body, specials]),
            "chat_template": sha256_json(getattr(tokenizer, "chat_template", None) or "none")}


def examples_sha256(examples: tuple[Example, ...]) -> str:
    return sha256_json([[e.id, e.prompt, e.target, e.label] for e in examples])


def general_task_sha256(task) -> str:
    return sha256_json([task.spec.model_dump(), list(task.items)])


def data_fingerprints(suite, data, general_tasks) -> dict[str, str]:
    """Fingerprints known before any model loads."""
    out = {"suite": suite.name, "task": sha256_json(suite.task.model_dump()),
           "data.test": examples_sha256(data.test)}
    for task in general_tasks:
        out[f"general.{task.name}"] = general_task_sha256(task)
    return out


def decoding_fingerprints(max_new_tokens: int, stop: tuple[str, ...], bf16: bool,
                          overlong: str = "error") -> dict[str, str]:
    from harness.evaluate import EVAL_VERSION

    return {"decoding.strategy": "greedy", "decoding.max_new_tokens": str(max_new_tokens),
            "decoding.stop": json.dumps(list(stop)),
            "decoding.precision": "bfloat16 (weights cast from fp32 for evaluation)" if bf16 else "float32",
            "decoding.overlong": overlong, "decoding.eval_version": str(EVAL_VERSION)}


def _short(value: str) -> str:
    return value[:12] if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else repr(value)


def differences(baseline: dict[str, str], current: dict[str, str]) -> list[str]:
    """One line per fingerprint that differs (or that the baseline lacks); the candidate's own hash aside."""
    out = []
    for key, value in current.items():
        if key in CANDIDATE_KEYS:
            continue
        if key not in baseline:
            out.append(f"{key}: not recorded in the baseline (record a new baseline)")
        elif baseline[key] != value:
            out.append(f"{key} differs: baseline {_short(baseline[key])}, now {_short(value)}")
    return out


def runtime_environment(packages: tuple[str, ...]) -> dict:
    """Python, platform, device, threads and the versions of `packages`: what a result was measured on."""
    import importlib.metadata as md
    import platform
    import sys

    import torch

    versions = {}
    for package in packages:
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"python": sys.version.split()[0], "platform": platform.platform(), "device": device,
            "cpu_threads": torch.get_num_threads(), "versions": versions}
