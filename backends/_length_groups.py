"""Rows of very different lengths in one micro-batch run as separate forwards.

Length-grouped sampling keeps most batches tight, but one long example still pads its whole
batch to its length, and transformers' sampler puts the batch holding the longest example first.
In the sentiment suite that first batch was one row of 152 tokens and seven of about 77: 1,216
positions for 700 tokens, and its forward+backward took 3.7 s against 1.5 s for the next ones
(SmolLM2-135M, 2 cores, full fine-tuning). Run as [152] and [7 x 77], it computes 691 positions.

The rows still make one optimizer micro-step: the groups' losses are summed so that the result is
the loss over all the batch's target tokens, exactly as one forward would give it (up to float
rounding), and a single backward follows.
"""

from __future__ import annotations

from backends._shared_prefix import KEYS, running_shared, with_prefix_row
from harness.length_groups import length_groups


def split_batch(inputs: dict) -> list[dict]:
    """A left-padded batch from TargetOnlyCollator as one batch per length group.

    Each group keeps only its own width of columns (left padding: the last columns) and its own
    window of kept positions for the output head; position ids already count from each row's
    first real token, so they carry over unchanged."""
    if set(inputs) != KEYS:
        return [inputs]
    mask, labels = inputs["attention_mask"], inputs["labels"]
    lengths = mask.sum(-1).tolist()
    groups = length_groups(lengths)
    if len(groups) == 1:
        return [inputs]
    target_lens = (labels != -100).sum(-1).tolist()
    out = []
    for rows in groups:
        index = mask.new_tensor(rows)
        width = max(lengths[row] for row in rows)
        keep = min(max(target_lens[row] for row in rows) + 1, width)
        out.append({"input_ids": inputs["input_ids"][index, -width:], "attention_mask": mask[index, -width:],
                    "position_ids": inputs["position_ids"][index, -width:],
                    "labels": labels[index, -keep:], "logits_to_keep": keep})
    return out


def target_count(batch: dict) -> int:
    # The model predicts labels[:, 1:] (it shifts them), as transformers' Trainer counts them.
    return int((batch["labels"][:, 1:] != -100).sum())


def length_grouped_trainer(trainer_cls, split: bool, share_prefix: bool = False):
    """trainer_cls whose training loss runs a batch as its length groups (when `split`), each
    with its rows' shared prefix run once (when `share_prefix`: backends/_shared_prefix.py).

    Neither under DDP/FSDP: their hooks expect one forward per backward."""

    class LengthGroupedTrainer(trainer_cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            training = model.training and not return_outputs
            groups = split_batch(inputs) if training and split else [inputs]
            runs = [with_prefix_row(group) if training and share_prefix else (group, 0) for group in groups]
            if len(runs) == 1 and not runs[0][1]:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # accelerate puts autocast around each forward, and autocast forgets its weight casts
            # when its outermost region ends: one region over the groups casts every weight once.
            with self.accelerator.autocast():
                return self._grouped_loss(model, runs, num_items_in_batch)

        def _grouped_loss(self, model, runs, num_items_in_batch):
            def loss_of(group, shared, **kwargs):
                with running_shared(shared):
                    return super(LengthGroupedTrainer, self).compute_loss(model, group, **kwargs)

            if len(runs) == 1 or (num_items_in_batch is not None and self.model_accepts_loss_kwargs):
                # Each group's loss is its summed token losses over the whole count: they add up.
                return sum(loss_of(group, shared, num_items_in_batch=num_items_in_batch) for group, shared in runs)
            counts = [target_count(group) for group, _ in runs]     # per-group means, weighted back
            return sum(loss_of(group, shared) * (count / sum(counts)) for (group, shared), count in zip(runs, counts))

    return LengthGroupedTrainer
