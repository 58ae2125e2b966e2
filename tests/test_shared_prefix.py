"""Training rows that open with the same tokens run them once: the same loss and gradients, fewer positions."""

from __future__ import annotations

import pytest
import torch

from backends._length_groups import length_grouped_trainer
from backends._sft import TargetOnlyCollator
from backends._shared_prefix import MIN_PREFIX, attend_with_shared_prefix, shared_prefix_length, shares_prefixes
from harness import models
from harness.backend import ModelSpec

from .test_length_groups import loss_and_grads

PREFIX = [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]


def _batch(tok, long_row: bool = False):
    """Rows opening with PREFIX, then rows of their own of different lengths and target lengths."""
    torch.manual_seed(0)
    lengths = [9, 8, 10, 9, 7, 8, 9] + ([90] if long_row else [])
    rows = [(PREFIX + torch.randint(20, 60, (n,)).tolist(), 1 + n % 3) for n in lengths]
    return TargetOnlyCollator(tok.pad_token_id)([{"input_ids": ids, "target_len": n} for ids, n in rows])


def _tiny(tiny_model_dir):
    return models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))


def test_the_shared_prefix_stops_before_the_first_predicted_position(tiny_model_dir):
    _, tok = _tiny(tiny_model_dir)
    assert shared_prefix_length(_batch(tok)) == len(PREFIX)
    # A row whose prompt is the prefix's first 9 tokens: the 9th predicts its first target token.
    short = TargetOnlyCollator(tok.pad_token_id)([{"input_ids": PREFIX + [40, 41], "target_len": 2},
                                                  {"input_ids": PREFIX[:9] + [50, 51], "target_len": 2}])
    assert shared_prefix_length(short) == 8 == MIN_PREFIX
    differ = TargetOnlyCollator(tok.pad_token_id)([{"input_ids": PREFIX + [40, 41], "target_len": 1},
                                                   {"input_ids": [5] + PREFIX + [50, 51], "target_len": 1}])
    assert shared_prefix_length(differ) == 0


@pytest.mark.parametrize("long_row", [False, True], ids=["one group", "length groups"])
@pytest.mark.parametrize("counted", [True, False], ids=["num_items_in_batch", "per-group means"])
def test_a_shared_prefix_gives_the_loss_and_gradients_of_the_whole_rows(tiny_model_dir, tmp_path, long_row, counted):
    from transformers import Trainer

    model, tok = _tiny(tiny_model_dir)
    batch = _batch(tok, long_row)
    num_items = int((batch["labels"][:, 1:] != -100).sum()) if counted else None
    whole, whole_grads, whole_shapes = loss_and_grads(length_grouped_trainer(Trainer, split=True), model, batch,
                                                      tmp_path / "a", num_items)
    attend_with_shared_prefix(model)
    shared, shared_grads, shared_shapes = loss_and_grads(
        length_grouped_trainer(Trainer, split=True, share_prefix=True), model, batch, tmp_path / "b", num_items)
    whole_positions = [rows * width for rows, width in whole_shapes]
    shared_positions = [rows * width for rows, width in shared_shapes]
    # Seven rows of 12 + 7-10 tokens: 7 x 22 positions whole; the prefix once as one more row and
    # each row only its own tokens (padded to the prefix's 12): 8 x 12. The long row (12 + 90)
    # has a group of its own, where a prefix row would only add positions: it runs whole.
    assert whole_positions == ([102] if long_row else []) + [154]
    assert shared_positions == ([102] if long_row else []) + [96]
    assert shared == pytest.approx(whole, rel=1e-5)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_no_sharing_where_it_would_not_be_exact(tiny_model_dir):
    model, _ = _tiny(tiny_model_dir)
    assert shares_prefixes(model, checkpointing=False, distributed=False)
    assert not shares_prefixes(model, checkpointing=True, distributed=False)
    assert not shares_prefixes(model, checkpointing=False, distributed=True)
    model.config.sliding_window = 4
    assert not shares_prefixes(model, checkpointing=False, distributed=False)
