"""Content-addressed cache of finished arms, and the place where unfinished ones resume.

An arm's key hashes everything its outcome depends on: the base model's files, the formatted
train/test examples and general tasks, the prompt format, the backend type and options, the
seed, the evaluation settings and the harness version. So an unchanged re-run reuses every arm,
and changing one arm's options re-runs only that arm.

Layout under $HARNESS_CACHE/arms/:
  <key>/outcome.json   a finished arm (rows, stats, artifact path), with its own checksum
  <key>/adapter|model  its artifact
  <key>.work/          an arm in progress: training checkpoints live here, so the same command
                       after a crash or kill -9 resumes from the last complete checkpoint
A finished arm is published by renaming <key>.work to <key>: a reader sees all of it or nothing.
A corrupt entry is a miss with a warning, moved aside, never a crash and never a wrong hit.
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
from harness.fingerprint import file_sha256
from harness.models import cache_dir

CACHE_VERSION = 1
WEIGHT_SUFFIXES = (".safetensors", ".json", ".model", ".txt", ".jinja", ".gguf")


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def model_fingerprint(model: ModelSpec) -> str:
    """Hash of the model directory's files (weights, config, tokenizer, chat template).

    Hashing 0.5 GB takes a second or two, so each file's hash is remembered by (size, mtime).
    An HF id that is not a local directory is fingerprinted by its name only.
    """
    root = Path(model.path)
    if not root.is_dir():
        return _digest({"hub": model.path})
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
    return _digest(files)


def arm_key(job, model_fp: str) -> str:
    """The hash of everything an arm's outcome depends on (job: harness.arm.ArmJob)."""
    data = job.data
    general = None
    if job.evaluate_general and data.general:
        general = [(t.name, t.spec.model_dump(), t.items) for t in data.general.tasks]
    return _digest({
        "cache_version": CACHE_VERSION, "harness": __version__, "model": model_fp,
        "train_dtype": job.model.train_dtype, "backend": job.backend, "options": job.options,
        "seed": data.seed, "task": dataclasses.asdict(data.task),
        "train": [dataclasses.astuple(e) for e in data.train],
        "test": [dataclasses.astuple(e) for e in data.test] if job.evaluate_test else None,
        "general": general, "batch_tokens": job.batch_tokens, "eval_bf16": job.eval_bf16,
        "overlong": job.overlong,
    })


def _write_json_atomic(path: Path, payload) -> None:
    from harness.results import atomic_write_text

    atomic_write_text(path, json.dumps(payload, sort_keys=True))


class ArmCache:
    def __init__(self, root: Path | None = None, read: bool = True):
        self.root = (root or cache_dir()) / "arms"
        self.read = read

    def entry(self, key: str) -> Path:
        return self.root / key

    def work_dir(self, key: str) -> Path:
        """Where the arm trains; kept across crashes so a re-run resumes from its checkpoints."""
        work = self.root / f"{key}.work"
        if not self.read and work.exists():        # --no-cache: start over
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        return work

    def load(self, key: str):
        """The cached ArmOutcome, or None (a miss). Never raises for a bad entry."""
        from harness.arm import ArmOutcome

        path = self.entry(key) / "outcome.json"
        if not self.read or not path.exists():
            return None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            payload = stored["payload"]
            if stored.get("sha256") != _digest(payload):
                raise ValueError("checksum mismatch")
            artifact = payload["artifact"]
            if artifact is not None:
                artifact = str(self.entry(key) / artifact)
                if not Path(artifact).exists():
                    raise ValueError("artifact missing")
            stats = TrainStats(**{**payload["stats"], "loss_curve": [tuple(p) for p in payload["stats"]["loss_curve"]]})
            return ArmOutcome(ok=True, rows=payload["rows"], general_rows=payload["general_rows"], stats=stats,
                              eval_seconds=payload["eval_seconds"], eval_tokens=payload["eval_tokens"],
                              general_seconds=payload["general_seconds"], artifact=artifact,
                              eval_truncated=payload.get("eval_truncated", 0))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._set_aside(key, exc)
            return None

    def _set_aside(self, key: str, why: Exception) -> None:
        warnings.warn(f"cache entry {key[:12]} is unreadable ({why}); ignoring it and running the arm again",
                      stacklevel=2)
        target = self.root / f"{key}.corrupt-{int(time.time())}"
        try:
            os.replace(self.entry(key), target)
        except OSError:
            pass

    def store(self, key: str, outcome) -> str | None:
        """Publish a finished arm: outcome.json into its work dir, then rename it to the entry.

        Returns the artifact's new path (inside the entry), or None.
        """
        work, entry = self.root / f"{key}.work", self.entry(key)
        artifact = None
        if outcome.artifact:
            artifact = Path(outcome.artifact).resolve().relative_to(work.resolve()).as_posix()
        payload = {"rows": outcome.rows, "general_rows": outcome.general_rows,
                   "stats": dataclasses.asdict(outcome.stats), "eval_seconds": outcome.eval_seconds,
                   "eval_tokens": outcome.eval_tokens, "general_seconds": outcome.general_seconds,
                   "eval_truncated": outcome.eval_truncated, "artifact": artifact}
        _write_json_atomic(work / "outcome.json", {"sha256": _digest(payload), "payload": payload})
        for leftover in ("trainer",):        # checkpoints are only needed until the arm finishes
            shutil.rmtree(work / leftover, ignore_errors=True)
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(work, entry)
        return str(entry / artifact) if artifact else None


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
    """Wraps an arm runner: a cache hit skips the arm; a miss trains in the cache's work dir (so a
    re-run after a crash resumes there) and publishes the finished arm to the cache."""

    def __init__(self, runner, cache: ArmCache, model: ModelSpec):
        self.runner, self.cache = runner, cache
        self.model_fp = model_fingerprint(model)

    def __call__(self, job):
        key = arm_key(job, self.model_fp)
        hit = self.cache.load(key)
        if hit is not None:
            hit.cached = True
            return hit
        outcome = self.runner(dataclasses.replace(job, workdir=str(self.cache.work_dir(key))))
        if outcome.ok:
            outcome.artifact = self.cache.store(key, outcome)
        return outcome
