"""One arm, start to finish: backend.train -> evaluate -> metrics, in a process of its own.

Each arm runs in a fresh spawned process so that (a) a crash, OOM kill or stuck library in one
arm never loses the others, (b) its peak memory is its own and measurable, and (c) the memory
it used goes back to the system before the next arm starts.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from harness.backend import ModelSpec
from harness.data import SuiteData
from harness.errors import HarnessError


@dataclass(frozen=True)
class ArmJob:
    name: str
    backend: str
    options: dict
    model: ModelSpec
    data: SuiteData
    batch_tokens: int
    workdir: str
    eval_bf16: bool = False          # evaluate with bf16 weights (harness.evaluate)
    overlong: str = "error"          # prompts over the model's context: error or truncate
    evaluate_test: bool = True       # the suite's test split
    evaluate_general: bool = True    # the general tasks (the forgetting check)


@dataclass
class ArmOutcome:
    ok: bool
    rows: list = field(default_factory=list)                 # per test example
    general_rows: dict = field(default_factory=dict)         # per general task: per item
    stats: object = None
    eval_seconds: float = 0.0
    eval_tokens: int = 0
    general_seconds: float = 0.0
    eval_truncated: int = 0
    cached: bool = False                                     # reused from the cache, not run
    artifact: str | None = None
    error: str | None = None
    exit_code: int | None = None
    traceback: str | None = None


def run_arm(job: ArmJob) -> ArmOutcome:
    """Train and evaluate one arm in this process: per-example rows out, no statistics here."""
    import time

    from harness import registry
    from harness.evaluate import evaluate
    from harness.general import evaluate_general

    backend_cls = registry.get(job.backend)
    backend = backend_cls(backend_cls.Options(**job.options))
    workdir = Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    processes = getattr(backend.options, "processes", 1)
    trained_now = False
    if processes > 1:       # the ranks train and save; this process reopens below and evaluates
        from harness.distributed import train_in_processes

        trained_now = train_in_processes(job, backend.options)
    handle = backend.train(job.model, job.data.train_data(), workdir)
    if trained_now:
        handle.stats.reopened = False     # trained by this run, in its own processes
    outcome = ArmOutcome(ok=True, stats=handle.stats, artifact=handle.artifact_path)
    if job.evaluate_test:
        out = evaluate(handle, job.data.test, job.data.task, job.batch_tokens, desc=f"{job.name} eval",
                       bf16=job.eval_bf16, overlong=job.overlong)
        outcome.rows, outcome.eval_seconds, outcome.eval_tokens = out.rows, out.seconds, out.tokens
        outcome.eval_truncated = out.truncated
    if job.evaluate_general and job.data.general:
        start = time.perf_counter()
        outcome.general_rows = evaluate_general(handle.model, handle.tokenizer, job.data.general,
                                                job.batch_tokens, job.eval_bf16)
        outcome.general_seconds = time.perf_counter() - start
    return outcome


def submit(runner, job: ArmJob):
    """Start an arm and return a call that gives its outcome (computed once, then kept). A runner
    with a `submit` method starts arms ahead, all at once (Ray); a plain runner (job -> outcome)
    runs the arm when the outcome is first asked for, so the local executor runs arms in order."""
    import functools

    start = getattr(runner, "submit", None)
    return start(job) if start is not None else functools.cache(lambda: runner(job))


def run_arm_caught(job: ArmJob) -> ArmOutcome:
    """run_arm with every failure turned into a failed outcome (secrets redacted): what an
    executor's worker process returns, whatever happened."""
    import warnings

    # Libraries' deprecation notices about their own internals are not the user's business.
    warnings.filterwarnings("ignore", category=FutureWarning)
    from harness.allocator import keep_freed_memory
    from harness.models import quiet_libraries

    quiet_libraries()    # a fresh process: the parent's logging settings did not come with it
    try:
        with keep_freed_memory():     # held for the whole arm: evaluation reuses what training freed
            outcome = run_arm(job)
    except HarnessError as exc:
        outcome = ArmOutcome(ok=False, error="; ".join(exc.lines()), exit_code=exc.exit_code,
                             traceback=traceback.format_exc())
    except MemoryError:
        outcome = ArmOutcome(ok=False, error="out of memory", exit_code=6, traceback=traceback.format_exc())
    except Exception as exc:  # noqa: BLE001 - any bug in one arm must not lose the others
        outcome = ArmOutcome(ok=False, error=f"{type(exc).__name__}: {exc}", exit_code=1,
                             traceback=traceback.format_exc())
    from harness.errors import redact

    # Secrets in the environment (tokens, keys) must never reach results, logs or reports.
    outcome.error = redact(outcome.error) if outcome.error else outcome.error
    outcome.traceback = redact(outcome.traceback) if outcome.traceback else outcome.traceback
    return outcome


def _child(job: ArmJob, conn) -> None:
    conn.send(run_arm_caught(job))
    conn.close()


def run_arm_isolated(job: ArmJob) -> ArmOutcome:
    """Run `run_arm` in a spawned child; a child that dies becomes a failed outcome, not a crash."""
    ctx = mp.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(job, child_conn), name=f"harness-arm-{job.name}")
    process.start()
    child_conn.close()
    try:
        outcome = parent_conn.recv()
    except EOFError:
        outcome = None
    except KeyboardInterrupt:
        process.terminate()
        raise
    process.join()
    if outcome is None:
        code = process.exitcode
        why = f"killed by signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
        hint = " (the system may have run out of memory)" if code == -signal.SIGKILL else ""
        outcome = ArmOutcome(ok=False, error=f"arm process died: {why}{hint}",
                             exit_code=6 if hint else 1)
    return outcome
