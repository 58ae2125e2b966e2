"""Training one arm in several processes (the `processes` training option).

The arm's own process (harness/arm.py) calls `train_in_processes` before `backend.train`. It
starts N ranks with torchrun, each running `python -m harness.distributed JOB` (the same pickled
ArmJob, the same backend.train); inside each rank, transformers' Trainer creates an accelerate
Accelerator that reads torchrun's environment and wraps the model in DDP or FSDP, with gloo on
CPU and nccl on CUDA. Only rank 0 writes checkpoints, the artifact and trained.json
(backends/_sft.py). When every rank has exited, the arm's process calls backend.train again in
the same work directory, which reopens the finished artifact (backends/_finished.py), and
evaluates it in one process as usual.

Why torchrun (`python -m torch.distributed.run --standalone`) and not `accelerate launch`:
`accelerate launch --cpu` starts one process unless MPI is installed (it hands multi-CPU runs to
mpirun), and `accelerate launch` reads the user's own accelerate config file, which would make an
arm's training depend on a file outside the suite. accelerate's own multi-GPU launcher is
torchrun underneath; `--standalone` picks a free rendezvous port, so two arms or two runs on one
machine never collide.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from harness.errors import (BackendError, DataError, HarnessError, RefusedArtifact, ResourceError, UsageError,
                            redact)

LOG = "distributed.log"
JOB = "distributed-job.pkl"
ERRORS = "distributed-errors"
ERROR_CLASSES = {2: UsageError, 3: DataError, 4: RefusedArtifact, 6: ResourceError}


def train_in_processes(job, options) -> bool:
    """Train job's arm in `options.processes` ranks; True if it trained now, False if an earlier run of
    the same arm had finished (the caller then only reopens). Failures raise a HarnessError."""
    from backends._finished import read_finished

    workdir, processes = Path(job.workdir), options.processes
    if read_finished(workdir) is not None:
        return False
    _check_devices(processes, getattr(options, "distributed", "ddp"))
    _set_aside_partial_checkpoints(workdir)
    errors = workdir / ERRORS
    shutil.rmtree(errors, ignore_errors=True)
    errors.mkdir(parents=True)
    (workdir / JOB).write_bytes(pickle.dumps(job))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "harness.distributed", str(workdir / JOB)]
    with open(workdir / LOG, "w", encoding="utf-8") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env={**os.environ, "HARNESS_RANK_ERRORS": str(errors)}).returncode
    (workdir / JOB).unlink(missing_ok=True)
    if code != 0:
        raise _failure(workdir, processes, code)
    if read_finished(workdir) is None:
        raise BackendError(f"the {processes} training processes ended without a trained model",
                           f"see {workdir / LOG}")
    shutil.rmtree(errors, ignore_errors=True)
    return True


def _check_devices(processes: int, distributed: str) -> None:
    import torch

    if distributed == "fsdp" and not torch.cuda.is_available():
        # accelerate shards with FSDP on accelerators only; on CPU it would quietly run DDP
        raise BackendError("distributed: fsdp needs GPUs (accelerate runs FSDP on CUDA only)",
                           "use distributed: ddp on CPU")
    if torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise BackendError(f"processes: {processes} but this machine has {torch.cuda.device_count()} GPUs",
                           "set processes to at most the number of GPUs (one process per GPU)")


def _set_aside_partial_checkpoints(workdir: Path) -> None:
    """Done here, once, before the ranks start: every rank looking for the checkpoint to resume
    from would otherwise race to rename the same half-written one."""
    from backends._checkpoints import last_good_checkpoint

    if (workdir / "trainer").is_dir():
        last_good_checkpoint(workdir / "trainer")


def _failure(workdir: Path, processes: int, code: int) -> HarnessError:
    """The error of the first rank that reported one (its class and exit code kept), else the
    launcher's exit code and the last line of the log."""
    reports = sorted((workdir / ERRORS).glob("rank*.json"), key=lambda p: int(p.stem[4:]))
    if reports:
        report = json.loads(reports[0].read_text(encoding="utf-8"))
        cls = ERROR_CLASSES.get(report["exit_code"], BackendError)
        error = cls(f"training process {reports[0].stem[4:]} of {processes}: {report['message']}", report["hint"])
        error.exit_code = report["exit_code"]
        return error
    lines = [ln.strip() for ln in (workdir / LOG).read_text(encoding="utf-8", errors="replace").splitlines()
             if ln.strip()]
    last = f": {lines[-1][:300]}" if lines else ""
    return BackendError(f"the {processes} training processes failed (launcher exit code {code}){last}",
                        f"the output of every process is in {workdir / LOG}")


def _report(exc: BaseException) -> None:
    """A rank's error, for the arm's process to raise with the same class and exit code."""
    folder = os.environ.get("HARNESS_RANK_ERRORS")
    if not folder:
        return
    if isinstance(exc, HarnessError):
        report = {"exit_code": exc.exit_code, "message": exc.message, "hint": exc.hint}
    else:
        report = {"exit_code": 1, "message": redact(f"{type(exc).__name__}: {exc}"),
                  "hint": "see distributed.log in the arm's work directory for the traceback"}
    Path(folder, f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(report), encoding="utf-8")


def rank_main(job_file: str) -> int:
    """One rank: the arm's backend trains on the job's data in the job's work directory."""
    from harness import registry

    warnings.filterwarnings("ignore", category=FutureWarning)
    job = pickle.loads(Path(job_file).read_bytes())
    backend_cls = registry.get(job.backend)
    backend = backend_cls(backend_cls.Options(**job.options))
    try:
        backend.train(job.model, job.data.train_data(), Path(job.workdir))
    except BaseException as exc:
        _report(exc)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(rank_main(sys.argv[1]))
