"""Trainer checkpoints that a killed run can resume from: each is marked complete once fully
written, and only a marked one is ever resumed."""

from __future__ import annotations

import time
from pathlib import Path

COMPLETE = "harness-complete"


def checkpoint_callback():
    from transformers import TrainerCallback

    class MarkComplete(TrainerCallback):
        """Trainer writes a checkpoint in place; this marks it complete once fully written, so a
        checkpoint cut short by a kill is never taken for a good one."""

        def on_step_end(self, args, state, control, **kwargs):
            # Trainer also checkpoints after the last step; the finished artifact and trained.json
            # are written right after, so that checkpoint (weights and optimizer state: 5 s for a
            # full fine-tune of 135M parameters here) would never be read.
            if state.global_step >= state.max_steps:
                control.should_save = False

        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and path.is_dir():   # the process that wrote it marks it
                (path / COMPLETE).write_text(str(state.global_step), encoding="utf-8")

    return MarkComplete()


def last_good_checkpoint(trainer_dir: Path) -> Path | None:
    """The newest checkpoint marked complete; unmarked ones (half-written) are set aside, because
    transformers' own lookup would pick the newest directory and crash on it."""
    best = None
    for path in sorted(trainer_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        if (path / COMPLETE).exists():
            best = path
        else:
            path.rename(trainer_dir / f"partial-{path.name}-{int(time.time())}")
    return best
