"""Content-addressed cache: trained models under one key, their evaluations under another.

A training key hashes everything a trained model depends on: the base model's files, the
formatted train examples, the prompt format, the backend type and options, the seed, the
training dtype and the harness version. An evaluation key hashes the training key (which names
the model or adapter exactly) with what the evaluation depends on: the test examples, the general
tasks and the decoding and batching settings. So an unchanged re-run reuses every arm; changing
one arm's options re-runs only that arm; changing the test data or decoding settings evaluates
again without training again.

Layout under $HARNESS_CACHE:
  train/<train key>/    the arm's training directory. While it trains, checkpoints live here, so
                        the same command after a crash or kill -9 resumes from the last complete
                        one; once finished it holds the artifact and the backend's finished-record
                        (backends/_sft.py), and a later run reopens the artifact instead of training.
  evals/<eval key>.json a finished evaluation (per-example rows, costs, the artifact's path),
                        with its own checksum, written atomically.
A corrupt entry is a miss with a warning, set aside, never a crash and never a wrong hit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path

from harness import __version__
from harness.backend import ModelSpec, TrainStats
from harness.evaluate import EVAL_VERSION
from harness.fingerprint import file_sha256
from harness.models import cache_dir

CACHE_VERSION = 3    # 3: training on CPU uses eager attention (numbers differ in the last bits)
WEIGHT_SUFFIXES = (".safetensors", ".json", ".model", ".txt", ".jinja", ".gguf")


def digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def model_fingerprint(model: ModelSpec) -> str:
    """Hash of the model directory's files (weights, config, tokenizer, chat template).

    Hashing 0.5 GB takes a second or two, so each file's hash is remembered by (size, mtime).
    An HF id that is not a local directory is fingerprinted by its name only.
    """
    root = Path(model.path)
    if not root.is_dir():
        return digest({"hub": model.path})
    memo_path = cache_dir() / "fingerprints.json"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES):
        stat = path.stat()
        stamp = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if stamp not in memo:
            memo[stamp] = file_sha256(path)
        files[path.relative_to(root).as_posix()] = memo[stamp]
    _write_json_atomic(memo_path, memo)
    return digest(files)


def train_key(job, model_fp: str) -> str:
    """The hash of everything an arm's trained model depends on (job: harness.arm.ArmJob)."""
    data = job.data
    return digest({
        "cache_version": CACHE_VERSION, "harness": __version__, "model": model_fp,
        "train_dtype": job.model.train_dtype, "backend": job.backend, "options": job.options,
        "seed": data.seed, "task": dataclasses.asdict(data.task),
        "train": [dataclasses.astuple(e) for e in data.train],
    })


def eval_key(job, trained: str) -> str:
    """The hash of everything an evaluation depends on, given the trained model's key."""
    data = job.data
    general = None
    if job.evaluate_general and data.general:
        general = [(t.name, t.spec.model_dump(), t.items) for t in data.general.tasks]
    return digest({
        "cache_version": CACHE_VERSION, "harness": __version__, "eval_version": EVAL_VERSION, "trained": trained,
        "test": [dataclasses.astuple(e) for e in data.test] if job.evaluate_test else None,
        "general": general, "batch_tokens": job.batch_tokens, "eval_bf16": job.eval_bf16,
        "overlong": job.overlong,
    })


def _write_json_atomic(path: Path, payload) -> None:
    from harness.results import atomic_write_text

    atomic_write_text(path, json.dumps(payload, sort_keys=True))


def write_checked(path: Path, payload: dict) -> None:
    """Write a JSON payload with its checksum, atomically: a reader sees all of it or nothing."""
    _write_json_atomic(path, {"sha256": digest(payload), "payload": payload})


def read_checked(path: Path) -> dict:
    """The payload written by write_checked; ValueError (or OSError, KeyError) if it is damaged."""
    stored = json.loads(path.read_text(encoding="utf-8"))
    payload = stored["payload"]
    if stored.get("sha256") != digest(payload):
        raise ValueError("checksum mismatch")
    return payload


def train_stats_from(raw: dict) -> TrainStats:
    return TrainStats(**{**raw, "loss_curve": [tuple(p) for p in raw["loss_curve"]]})


class ArmCache:
    def __init__(self, root: Path | None = None, read: bool = True):
        self.root = root or cache_dir()
        self.read = read

    def train_dir(self, key: str) -> Path:
        """Where the arm trains, kept after it finishes; --no-cache starts it over."""
        work = self.root / "train" / key
        if not self.read and work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        return work

    def eval_entry(self, key: str) -> Path:
        return self.root / "evals" / f"{key}.json"

    def load(self, key: str):
        """The cached ArmOutcome, or None (a miss). Never raises for a bad entry."""
        from harness.arm import ArmOutcome

        path = self.eval_entry(key)
        if not self.read or not path.exists():
            return None
        try:
            payload = read_checked(path)
            artifact = payload["artifact"]
            if artifact is not None:
                artifact = str(self.root / artifact)
                if not Path(artifact).exists():
                    raise ValueError("its trained artifact is missing")
            stats = train_stats_from(payload["stats"])
            return ArmOutcome(ok=True, rows=payload["rows"], general_rows=payload["general_rows"], stats=stats,
                              eval_seconds=payload["eval_seconds"], eval_tokens=payload["eval_tokens"],
                              general_seconds=payload["general_seconds"], artifact=artifact,
                              eval_truncated=payload.get("eval_truncated", 0))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._set_aside(path, exc)
            return None

    def _set_aside(self, path: Path, why: Exception) -> None:
        warnings.warn(f"cache entry {path.stem[:12]} is unreadable ({why}); ignoring it and evaluating again",
                      stacklevel=2)
        try:
            os.replace(path, path.with_name(f"{path.name}.corrupt-{int(time.time())}"))
        except OSError:
            pass

    def store(self, key: str, outcome) -> None:
        """Record a finished evaluation; its artifact stays in the training directory."""
        artifact = None
        if outcome.artifact:
            artifact = Path(outcome.artifact).resolve().relative_to(self.root.resolve()).as_posix()
        stats = dataclasses.replace(outcome.stats, reopened=False)
        payload = {"rows": outcome.rows, "general_rows": outcome.general_rows,
                   "stats": dataclasses.asdict(stats), "eval_seconds": outcome.eval_seconds,
                   "eval_tokens": outcome.eval_tokens, "general_seconds": outcome.general_seconds,
                   "eval_truncated": outcome.eval_truncated, "artifact": artifact}
        write_checked(self.eval_entry(key), payload)


def publish_artifact(artifact: str, destination: Path) -> Path:
    """Place a cached artifact in the run directory: hard links (no copy) where the disk allows."""
    source = Path(artifact)
    target = destination / source.name
    if target.exists():
        shutil.rmtree(target)
    try:
        shutil.copytree(source, target, copy_function=os.link)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    return target


class CachedRunner:
    """Wraps an arm runner: a cached evaluation skips the arm; otherwise the arm runs in its
    training directory, where the backend resumes an unfinished training or reopens a finished
    one, and the finished evaluation is stored."""

    def __init__(self, runner, cache: ArmCache, model: ModelSpec):
        self.runner, self.cache = runner, cache
        self.model_fp = model_fingerprint(model)
        self._training: dict = {}      # train key -> the outcome call of the arm training it

    def __call__(self, job):
        return self.submit(job)()

    def submit(self, job):
        """The arm started (see harness.arm.submit); a call that gives its outcome. Two arms that
        train the same model never share its training directory at once: the second starts when
        the first is done, and reopens its model."""
        import functools

        from harness.arm import submit

        trained = train_key(job, self.model_fp)
        key = eval_key(job, trained)
        hit = self.cache.load(key)
        if hit is not None:
            hit.cached = True
            return lambda: hit
        from harness import registry

        trains = getattr(registry.get(job.backend), "trains", True)
        before = self._training.get(trained) if trains else None

        def start():
            return submit(self.runner, dataclasses.replace(job, workdir=str(self.cache.train_dir(trained))))

        pending = start() if before is None else None

        def outcome():
            nonlocal pending
            if pending is None:
                before()
                pending = start()
            result = pending()
            if result.ok:
                self.cache.store(key, result)
            return result

        self._training[trained] = functools.cache(outcome)
        return self._training[trained]
