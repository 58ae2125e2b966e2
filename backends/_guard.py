"""Stop a training run within one step when it breaks, and the test-only fault hooks that prove it.

HARNESS_FAULT (tests only): kill_at_step=N, nan_at_step=N, zero_loss, oom_above_batch=N here;
disk_full_on_save in backends._sft.save_atomically.
"""

from __future__ import annotations

import math
import os


def guard_callback(model):
    from transformers import TrainerCallback

    class TrainingGuard(TrainerCallback):
        """Stops the run within one step when training breaks, from the tensors themselves (the
        logged loss is an average that Trainer may filter): a non-finite loss in any micro-batch,
        non-finite gradients, or a gradient norm of zero for COLLAPSE_STEPS steps; and non-finite
        weights at the end, before anything is saved."""

        COLLAPSE_STEPS = 3
        reason = None
        zero_steps = 0

        def __init__(self):
            model.register_forward_hook(self._check_loss, with_kwargs=True)

        def _check_loss(self, module, args, kwargs, output):
            loss = getattr(output, "loss", None)
            if not module.training or loss is None:
                return None
            fault = os.environ.get("HARNESS_FAULT", "")
            # the batch's training rows (a shared prefix's row carries no labels)
            if fault.startswith("oom_above_batch=") and _rows_with_labels(kwargs) > int(fault.split("=")[1]):
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory (test fault)")
            if fault == "zero_loss":     # test-only: a run whose gradients vanish
                output.loss = loss * 0.0
            elif not bool(loss.detach().isfinite()) and not self.reason:
                self.reason = f"the loss became {float(loss)}"
            return output

        def on_log(self, args, state, control, logs=None, **kwargs):
            # Trainer has just computed the gradient norm to clip it and logs it every step
            # (logging_steps=1): reading it saves a second pass over every gradient.
            norm = (logs or {}).get("grad_norm")
            if norm is None or self.reason:
                return
            self.zero_steps = self.zero_steps + 1 if norm == 0.0 else 0
            if not math.isfinite(norm):
                self.reason = f"the gradients became non-finite (norm {norm}; step {state.global_step})"
            elif self.zero_steps >= self.COLLAPSE_STEPS:
                self.reason = f"training collapsed: zero gradient norm for {self.zero_steps} steps " \
                              f"(step {state.global_step})"
            control.should_training_stop = control.should_training_stop or self.reason is not None

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if self.reason:
                self.reason = f"{self.reason} (step {state.global_step})"
                control.should_training_stop = True
            _fault_injection(state.global_step, model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            # Weights turn non-finite only through a non-finite update, whose gradients on_log has
            # already caught, and a non-finite weight makes the next step's loss non-finite; what
            # is left is the last step, checked here before the artifact is saved. (Checking
            # every step cost 22 ms of a 1.5 s full fine-tuning step of 135M weights.)
            if not self.reason and not _weights_finite(model):
                self.reason = f"the weights became non-finite (step {state.global_step})"

    return TrainingGuard()


def _weights_finite(model) -> bool:
    """One fused pass over the trainable weights (their total norm is finite iff every weight is,
    short of an overflow that is itself divergence). Checking each tensor with isfinite().all()
    took 430 ms of a 1.7 s full fine-tuning step on 2 cores: four passes and temporaries per tensor."""
    import torch

    weights = [p.detach() for p in model.parameters() if p.requires_grad]
    return not weights or bool(torch.nn.utils.get_total_norm(weights, foreach=True).isfinite())


def _fault_injection(step: int, model) -> None:
    """Test-only faults, set by HARNESS_FAULT: kill_at_step=N kills this process (SIGKILL) at the end
    of step N; nan_at_step=N writes a NaN into a trainable weight at the end of step N. (Also
    zero_loss and oom_above_batch=N in the guard, disk_full_on_save in save_atomically.)"""
    import signal

    kind, _, at = os.environ.get("HARNESS_FAULT", "").partition("=")
    if not at or step != int(at):
        return
    if kind == "kill_at_step":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "nan_at_step":
        import torch

        with torch.no_grad():
            next(p for p in model.parameters() if p.requires_grad).view(-1)[0] = float("nan")


def _rows_with_labels(kwargs: dict) -> int:
    labels = kwargs.get("labels")
    return 0 if labels is None else int((labels != -100).any(-1).sum())
