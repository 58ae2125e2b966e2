"""A micro-batch with one long row runs as length groups: fewer positions, the same loss and gradients."""

from __future__ import annotations

import pytest
import torch

from backends._length_groups import length_grouped_trainer
from backends._sft import TargetOnlyCollator
from harness import models
from harness.backend import ModelSpec
from harness.length_groups import length_groups


def rows_of(groups):      # the groups, each's rows by index (within a group they come longest first)
    return [sorted(group) for group in groups]


def test_an_outlier_gets_its_own_group_and_similar_rows_stay_together():
    # The sentiment suite's first batch: one 152-token row and seven of about 77.
    assert rows_of(length_groups([77, 76, 152, 75, 74, 72, 72, 71])) == [[2], [0, 1, 3, 4, 5, 6, 7]]
    assert rows_of(length_groups([70, 69, 71, 70])) == [[0, 1, 2, 3]]      # a split would not pay its overhead
    assert rows_of(length_groups([100, 20, 100, 20, 100, 20], overhead=10)) == [[0, 2, 4], [1, 3, 5]]
    assert rows_of(length_groups([5])) == [[0]]
    # A budget caps a group's padded size (a single row may exceed it), max_rows its rows.
    assert rows_of(length_groups([30, 30, 30, 30], overhead=1000, budget=60)) == [[0, 1], [2, 3]]
    assert rows_of(length_groups([90, 30], overhead=1000, budget=60)) == [[0], [1]]
    assert rows_of(length_groups([10] * 5, overhead=1000, max_rows=2)) == [[0, 1], [2, 3], [4]]


def _batch(tok):
    torch.manual_seed(0)
    rows = [(torch.randint(5, 60, (90,)).tolist(), 3)] + [
        (torch.randint(5, 60, (n,)).tolist(), 1 + n % 2) for n in (9, 8, 10, 9, 7, 8, 9)]
    return TargetOnlyCollator(tok.pad_token_id)([{"input_ids": ids, "target_len": n} for ids, n in rows])


def loss_and_grads(trainer_cls, model, batch, tmp_path, num_items):
    """(loss, each parameter's gradient, the (rows, width) of every forward) of one training batch."""
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=True)
    trainer = trainer_cls(model=model, args=args)
    shapes = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    model.zero_grad(set_to_none=True)
    model.train()
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)
    loss.backward()
    hook.remove()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()}, shapes


def _widths(shapes):
    return [width for _, width in shapes]


@pytest.mark.parametrize("counted", [True, False], ids=["num_items_in_batch", "per-group means"])
def test_the_split_batch_gives_the_loss_and_gradients_of_the_whole_batch(tiny_model_dir, tmp_path, counted):
    from transformers import Trainer

    model, tok = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    batch = _batch(tok)
    num_items = int((batch["labels"][:, 1:] != -100).sum()) if counted else None
    whole, whole_grads, whole_shapes = loss_and_grads(Trainer, model, batch, tmp_path / "a", num_items)
    split, split_grads, split_shapes = loss_and_grads(length_grouped_trainer(Trainer, split=True), model, batch,
                                                      tmp_path / "b", num_items)
    # the short rows ran without the long one's padding
    assert _widths(whole_shapes) == [90] and _widths(split_shapes) == [90, 10]
    assert split == pytest.approx(whole, rel=1e-5)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(split_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_no_split_when_switched_off(tiny_model_dir, tmp_path):
    from transformers import Trainer

    model, tok = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    *_, shapes = loss_and_grads(length_grouped_trainer(Trainer, split=False), model, _batch(tok), tmp_path, None)
    assert _widths(shapes) == [90]


def test_evaluation_cuts_scoring_batches_by_cost_and_fills_decoding_groups():
    from harness.batch_scoring import request_groups

    lengths = [200] * 4 + [100] * 20
    # Filled greedily, the first batch would pad 16 rows of 100 to 200 (4,000 positions for 2,400).
    assert rows_of(request_groups(lengths, 4096, continuations=1, max_new=0)) == [list(range(4)), list(range(4, 24))]
    assert rows_of(request_groups(lengths, 4096, continuations=4, max_new=0)) == [list(range(4)), list(range(4, 24))]
    # Rows that decode share one loop: one group, whatever the padding of their prompt pass.
    assert rows_of(request_groups(lengths, 4096, continuations=1, max_new=24)) == [list(range(24))]


def _cast_nodes(loss, weight) -> int:
    """How many bf16 casts of `weight` the loss's graph holds (autograd records each as a node)."""
    seen, stack, casts = set(), [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for parent, _ in node.next_functions:
            if parent is not None and type(parent).__name__ == "AccumulateGrad" and parent.variable is weight:
                casts.add(node)
            stack.append(parent)
    return len(casts)


def test_the_groups_of_a_split_batch_share_one_bf16_cast_of_each_weight(tiny_model_dir, tmp_path):
    """accelerate puts autocast around each forward; without one region over all the groups,
    every weight would be cast again for each group."""
    from transformers import Trainer, TrainingArguments

    model, tok = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to=[], disable_tqdm=True)
    trainer = length_grouped_trainer(Trainer, split=True)(model=model, args=args)
    prepared = trainer.accelerator.prepare(model)       # as Trainer.train does: autocast around forward
    prepared.train()
    loss = trainer.compute_loss(prepared, dict(_batch(tok)))
    weight = model.model.layers[0].mlp.up_proj.weight
    assert _cast_nodes(loss, weight) == 1
