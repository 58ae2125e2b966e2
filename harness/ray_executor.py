"""The Ray executor (`harness compare SUITE --executor ray [--address ADDR]`): every arm is one
Ray task with the resources its suite entry declares, all submitted at once; Ray places them on
the cluster's nodes and runs as many side by side as the resources allow.

Each task runs harness.arm.run_arm_caught, the same function the local executor runs in its
spawned process, in a fresh Ray worker process (max_calls=1): an arm's peak memory is its own and
nothing one arm loaded or seeded is seen by the next, as locally. A task is never retried: a
retry would hide a crash the local executor reports. The outcomes come back to this process,
which writes results.json exactly as the local executor does.

Paths are the driver's: on a multi-node cluster, the model, the run directory (--out) and
HARNESS_CACHE must be on a filesystem every node mounts at the same path.
"""

from __future__ import annotations

import functools
from typing import Callable

from harness.errors import UsageError

INSTALL = "pip install 'harness[ray]'   (or: pip install 'ray>=2.9')"


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed", f"run: {INSTALL}") from None
    return ray


def task_options(resources) -> dict:
    """Ray's task options for one arm's declared resources (harness.suite.ResourcesSpec)."""
    options = {"num_cpus": resources.cpus, "num_gpus": resources.gpus}
    if resources.memory_gb:
        options["memory"] = int(resources.memory_gb * 1024 ** 3)
    return options


class RayRunner:
    """An arm runner (harness.compare.run_compare) whose `submit` starts the arm as a Ray task.

    resources: arm name -> ResourcesSpec (the base model's general-task run is named "base");
    echo: prints one progress line, e.g. when a task finishes."""

    def __init__(self, resources: dict, echo: Callable[[str], None] = print):
        self.ray = import_ray()
        self.resources = resources
        self.echo = echo
        self.task = self.ray.remote(max_calls=1, max_retries=0)(_run_arm)
        self.pending: dict = {}      # object ref -> arm name, for the arms not finished yet
        self.submitted = self.finished = 0

    def __call__(self, job):
        return self.submit(job)()

    def submit(self, job):
        from harness.suite import ResourcesSpec

        resources = self.resources.get(job.name, ResourcesSpec())
        ref = self.task.options(name=f"harness-arm-{job.name}", **task_options(resources)).remote(job)
        self.pending[ref] = job.name
        self.submitted += 1
        wanted = ", ".join(f"{k}={v:g}" for k, v in resources.model_dump().items() if v)
        self.echo(f"  ray: submitted {job.name} ({wanted})")
        return functools.cache(lambda: self._outcome(ref, job.name))

    def _outcome(self, ref, name: str):
        """Wait for this arm; report every arm that finishes meanwhile, in the order they finish."""
        while ref in self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1)
            for done in ready:
                self.finished += 1
                self.echo(f"  ray: {self.pending.pop(done)} finished ({self.finished}/{self.submitted})")
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:     # the worker died: killed, out of memory, node lost
            from harness.arm import ArmOutcome

            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            memory = isinstance(exc, getattr(self.ray.exceptions, "OutOfMemoryError", ()))
            return ArmOutcome(ok=False, error=f"Ray task for arm {name} failed: {type(exc).__name__}: {first}",
                              exit_code=6 if memory else 1)


def _run_arm(job):
    from harness.arm import run_arm_caught

    return run_arm_caught(job)


def suite_resources(suite) -> dict:
    """Arm name -> declared resources; the base model's general-task run takes those of the
    first prompt arm (the same model, evaluated the same way), else the defaults."""
    from harness import registry

    resources = {name: spec.resources for name, spec in suite.backends.items()}
    prompt = [n for n, s in suite.backends.items() if not getattr(registry.get(s.type), "trains", True)]
    if prompt:
        resources["base"] = resources[prompt[0]]
    return resources


def start(address: str | None, echo: Callable[[str], None]) -> Callable[[], None]:
    """Connect to the cluster at `address`, or start a local Ray instance (every CPU of this
    machine); an already connected Ray (a notebook, a test) is used as it is. Returns the call
    that disconnects, or stops the local instance, when the run is over."""
    ray = import_ray()
    if ray.is_initialized():
        return lambda: None
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(include_dashboard=False, log_to_driver=True)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"--executor ray: cannot start or reach Ray{f' at {address}' if address else ''}: {exc}",
                         "check --address (ray://HOST:10001 or HOST:6379), or leave it out to start Ray here") \
            from None
    cluster = ray.cluster_resources()
    echo(f"ray: {'connected to ' + address if address else 'started locally'}, "
         f"{cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs")
    return ray.shutdown


def open_runner(suite, address: str | None, echo: Callable[[str], None]) -> tuple[RayRunner, Callable[[], None]]:
    """The Ray runner for this suite's arms and the call that ends the Ray session."""
    stop = start(address, echo)
    try:
        return RayRunner(suite_resources(suite), echo), stop
    except BaseException:
        stop()
        raise
