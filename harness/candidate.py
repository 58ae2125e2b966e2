"""A candidate for the regression gate: a PEFT adapter directory or a (merged) model directory.

Safety, checked by `inspect` from the directory listing and its JSON configs alone, before any
weight is read:
- pickle files (.bin .pt .pth .pkl .pickle .ckpt) anywhere in the directory are refused: unpickling
  can run arbitrary code. `allow_pickle` lets them through; PEFT and transformers then load them
  with torch's weights_only unpickler, which refuses anything but tensors.
- a model whose config asks for custom code (`auto_map`) is refused: remote code is never run
  (every load passes trust_remote_code=False).
- an adapter must name the suite's base model (adapter_config.json base_model_name_or_path): the
  same reference or resolved path, a local directory with the same weights, or failing those the
  same final name (an adapter trained on another machine, whose cache path differs); a merged
  model must have the base model's architecture. Anything else is refused (exit 4) unless
  `allow_base_mismatch`.

`open_candidate` loads the base model once, fingerprints it, runs the probe prompts through it,
applies the adapter (or loads the merged model) and runs them again: logits identical to the
base model's mean the adapter is a no-op or is not attached. An adapter is then merged into the
base weights for evaluation (as compare does), after the probe saw it unmerged.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.backend import ModelSpec
from harness.errors import RefusedArtifact, UsageError
from harness.fingerprint import files_sha256, tokenizer_fingerprints, weights_sha256
from harness.models import PICKLE_SUFFIXES, library_deprecations_quiet

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
MODEL_FILES = ("config.json", "*.safetensors", "*.bin", "*.pt", "*.pth")
ARCHITECTURE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "intermediate_size")
PROBE_TOLERANCE = 1e-6


@dataclass
class Candidate:
    kind: str                        # "adapter" or "model"
    path: Path
    sha256: str                      # its config and weight files
    base_model_name_or_path: str | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "sha256": self.sha256,
                "base_model_name_or_path": self.base_model_name_or_path}


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read ({exc})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return value


def _refuse_pickles(path: Path, allow_pickle: bool, notes: list[str]) -> None:
    pickles = sorted(str(p.relative_to(path)) for p in path.rglob("*")
                     if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
    if not pickles:
        return
    if not allow_pickle:
        raise RefusedArtifact(
            f"{path}: pickle file(s) {', '.join(pickles)}: refused, loading a pickle can run arbitrary code",
            "save the weights as safetensors (save_pretrained(..., safe_serialization=True)) and remove the "
            "pickle files; --allow-pickle loads them with torch's weights-only unpickler, for files you trust")
    notes.append(f"pickle file(s) allowed by --allow-pickle: {', '.join(pickles)}")


def inspect(adapter: Path | None, model: Path | None, base: ModelSpec, *, allow_pickle: bool = False,
            allow_base_mismatch: bool = False) -> Candidate:
    """Check the candidate directory without loading anything; raise RefusedArtifact (exit 4) if unsafe."""
    if (adapter is None) == (model is None):
        raise UsageError("give exactly one of --adapter PATH (a PEFT adapter directory) or --model PATH "
                         "(a merged model directory)")
    kind, path = ("adapter", adapter) if adapter is not None else ("model", model)
    if not path.is_dir():
        raise UsageError(f"--{kind} {path}: not a directory",
                         "give the directory written by save_pretrained (e.g. RUN/arms/lora/adapter)")
    path = path.resolve()
    notes: list[str] = []
    _refuse_pickles(path, allow_pickle, notes)
    if kind == "adapter":
        return _inspect_adapter(path, base, allow_pickle, allow_base_mismatch, notes)
    return _inspect_model(path, base, allow_pickle, allow_base_mismatch, notes)


def _inspect_adapter(path: Path, base: ModelSpec, allow_pickle: bool, allow_mismatch: bool,
                     notes: list[str]) -> Candidate:
    if not (path / "adapter_config.json").exists():
        raise UsageError(f"--adapter {path}: no adapter_config.json, not a PEFT adapter directory",
                         "a merged or fully fine-tuned model goes with --model")
    has_weights = (path / "adapter_model.safetensors").exists() or (
        allow_pickle and (path / "adapter_model.bin").exists())
    if not has_weights:
        raise UsageError(f"--adapter {path}: no adapter_model.safetensors")
    config = _read_json(path / "adapter_config.json")
    recorded = config.get("base_model_name_or_path")
    candidate = Candidate("adapter", path, files_sha256(path, ADAPTER_FILES), recorded, notes)
    problem = _base_mismatch(recorded, base, notes)
    if problem:
        if not allow_mismatch:
            raise RefusedArtifact(f"--adapter {path}: {problem}",
                                  "use the suite whose model the adapter was trained on; "
                                  "--allow-base-mismatch overrides this check")
        notes.append(f"base model check overridden: {problem}")
    return candidate


def _same_name(recorded: str, base: ModelSpec) -> bool:
    names = {Path(base.path).name.lower(), base.ref.rstrip("/").split("/")[-1].split(":")[-1].lower()}
    return recorded.rstrip("/").replace("\\", "/").split("/")[-1].lower() in names


def _base_mismatch(recorded: str | None, base: ModelSpec, notes: list[str]) -> str | None:
    """None if the adapter's recorded base is the suite's model; else what is wrong."""
    if not recorded:
        notes.append("the adapter does not record its base model (base_model_name_or_path); not checked")
        return None
    if recorded in (base.ref, base.path):
        return None
    local, base_local = Path(recorded).expanduser(), Path(base.path)
    if local.is_dir() and base_local.is_dir():
        if local.resolve() == base_local.resolve():
            return None
        if files_sha256(local, ("config.json", "*.safetensors")) == files_sha256(base_local, ("config.json",
                                                                                               "*.safetensors")):
            notes.append(f"the adapter's base {recorded} is a copy of the suite's model (same files)")
            return None
        return f"trained on {recorded}, which is not the suite's model {base.ref} ({base.path})"
    if _same_name(recorded, base):
        notes.append(f"the adapter's base {recorded!r} is not on this machine; matched the suite's model "
                     f"{base.ref} by name")
        return None
    return f"trained on {recorded!r}, not on the suite's model {base.ref} ({base.path})"


def _inspect_model(path: Path, base: ModelSpec, allow_pickle: bool, allow_mismatch: bool,
                   notes: list[str]) -> Candidate:
    if not (path / "config.json").exists():
        raise UsageError(f"--model {path}: no config.json, not a model directory",
                         "an adapter directory goes with --adapter")
    if not any(path.glob("*.safetensors")) and not allow_pickle:
        raise UsageError(f"--model {path}: no .safetensors weights")
    config = _read_json(path / "config.json")
    custom = [name for name in ("config.json", "tokenizer_config.json")
              if (path / name).is_file() and _read_json(path / name).get("auto_map")]
    if custom:
        verb = "asks" if len(custom) == 1 else "ask"
        raise RefusedArtifact(f"--model {path}: {' and '.join(custom)} {verb} for custom code (auto_map); remote "
                              "code is never run", "use a model of an architecture transformers implements")
    problem = _architecture_mismatch(config, base)
    if problem:
        if not allow_mismatch:
            raise RefusedArtifact(f"--model {path}: {problem}", "--allow-base-mismatch overrides this check")
        notes.append(f"base model check overridden: {problem}")
    return Candidate("model", path, files_sha256(path, MODEL_FILES), config.get("_name_or_path"), notes)


def _architecture_mismatch(config: dict, base: ModelSpec) -> str | None:
    from transformers import AutoConfig

    try:
        base_config = AutoConfig.from_pretrained(base.path, trust_remote_code=False).to_dict()
    except (OSError, ValueError) as exc:
        raise UsageError(f"model {base.ref!r}: {str(exc).splitlines()[0]}") from None
    differ = [f"{k} {config.get(k)!r} vs {base_config.get(k)!r}" for k in ARCHITECTURE_KEYS
              if k in base_config and config.get(k) != base_config.get(k)]
    if differ:
        return f"not the architecture of the suite's model {base.ref}: {', '.join(differ)}"
    return None


# -- loading --------------------------------------------------------------------------------------------

@dataclass
class Probe:
    prompts: int
    max_abs_diff: float

    @property
    def applied(self) -> bool:
        return self.max_abs_diff >= PROBE_TOLERANCE

    def describe(self) -> str:
        if self.applied:
            return (f"the candidate changes the base model's logits on {self.prompts} probe prompts "
                    f"(max |difference| {self.max_abs_diff:.3g})")
        return (f"the candidate's logits equal the base model's on {self.prompts} probe prompts (max |difference| "
                f"{self.max_abs_diff:.3g} < {PROBE_TOLERANCE:g}): the adapter is a no-op (untrained) or not "
                "attached to the model")


@dataclass
class Opened:
    model: object
    tokenizer: object
    fingerprints: dict[str, str]
    probe: Probe
    seconds: float


def probe_logits(model, prompts: list[list[int]]):
    """fp32 logits of each probe prompt, one at a time (no padding, no autocast)."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode(), torch.autocast(device.type, enabled=False):
        for ids in prompts:
            out.append(model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu())
    return out


def _max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def open_candidate(candidate: Candidate, base: ModelSpec, probe_prompts, allow_pickle: bool = False) -> Opened:
    """Load the base model once, fingerprint it, probe it, then apply the candidate and probe again.

    probe_prompts(tokenizer) -> list of token-id lists.
    """
    import gc

    from harness import models

    start = time.perf_counter()
    model, tokenizer = models.load(base)
    fingerprints = {"base_model": weights_sha256(model), **tokenizer_fingerprints(tokenizer)}
    prompts = probe_prompts(tokenizer)
    before = probe_logits(model, prompts)
    if candidate.kind == "adapter":
        model = _apply_adapter(model, candidate.path, allow_pickle)
        fingerprints["adapter"] = candidate.sha256
    else:
        del model
        gc.collect()
        model, tokenizer = _load_model(candidate.path, base, allow_pickle)
        fingerprints.update(tokenizer_fingerprints(tokenizer))
        fingerprints["model"] = candidate.sha256
    probe = Probe(len(prompts), _max_diff(before, probe_logits(model, prompts)))
    if candidate.kind == "adapter":
        model = merge_for_eval(model)
    return Opened(model, tokenizer, fingerprints, probe, time.perf_counter() - start)


def merge_for_eval(peft_model):
    """Fold the adapter into the base weights for evaluation, as compare does for its LoRA arms
    (backends/_sft.py): the same function without the adapter's extra matmuls on every layer, and
    the very weights `harness export --merged` writes, so an exported model scores exactly as its
    adapter. Adapters on the embeddings or the output head stay unmerged: with tied embeddings,
    merging one would change the other."""
    base = peft_model.get_base_model()
    adapted = [m for m in (base.get_input_embeddings(), base.get_output_embeddings())
               if m is not None and any(hasattr(m, attr) for attr in ("lora_A", "lora_embedding_A"))]
    if adapted or getattr(peft_model, "modules_to_save", None):
        return peft_model
    return peft_model.merge_and_unload().eval()


def _apply_adapter(model, path: Path, allow_pickle: bool):
    import pickle

    from peft import PeftModel

    try:
        # A local directory only (never the hub); weights are safetensors unless --allow-pickle
        # let a .bin through, which PEFT loads with torch's weights-only unpickler.
        with library_deprecations_quiet():
            peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False, local_files_only=True)
    except pickle.UnpicklingError as exc:
        raise RefusedArtifact(f"--adapter {path}: the pickle weights hold more than tensors, refused by the "
                              f"weights-only unpickler ({str(exc).splitlines()[0]})") from None
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise UsageError(f"--adapter {path}: cannot apply the adapter to the suite's model "
                         f"({str(exc).splitlines()[0]})", "was it trained on this base model?") from None
    peft_model.eval()
    return peft_model


def _load_model(path: Path, base: ModelSpec, allow_pickle: bool):
    import pickle

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models import quiet_libraries

    quiet_libraries()
    has_tokenizer = (path / "tokenizer_config.json").exists() or (path / "tokenizer.json").exists()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path) if has_tokenizer else base.path, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, trust_remote_code=False,
                                                     use_safetensors=not allow_pickle, local_files_only=True)
    except pickle.UnpicklingError as exc:
        raise RefusedArtifact(f"--model {path}: the pickle weights hold more than tensors, refused by the "
                              f"weights-only unpickler ({str(exc).splitlines()[0]})") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--model {path}: cannot load ({str(exc).splitlines()[0]})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    return model, tokenizer
