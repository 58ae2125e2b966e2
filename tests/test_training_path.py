"""The shared training call's inputs: the target-only batch gives exactly the textbook loss."""

from __future__ import annotations

import pytest
import torch

from backends._sft import TargetOnlyCollator
from harness import models
from harness.backend import ModelSpec
from harness.errors import RefusedArtifact


def test_target_only_batch_loss_equals_per_row_full_logits_loss(tiny_model_dir):
    model, tok = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    rows = [([5, 6, 7, 8, 9, 10, 11], 2), ([12, 13, 14], 1), ([20, 21, 22, 23, 24], 3)]
    batch = TargetOnlyCollator(tok.pad_token_id)(
        [{"input_ids": ids, "target_len": n} for ids, n in rows])
    assert batch["logits_to_keep"] == 4 and batch["labels"].shape == (3, 4)
    batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    with torch.no_grad():
        loss = model(**batch).loss
        total, count = 0.0, 0
        for ids, n in rows:   # textbook: full logits, unpadded, loss on the last n tokens only
            logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0].cpu()
            logp = torch.log_softmax(logits[-n - 1:-1], dim=-1)
            total -= float(logp.gather(-1, torch.tensor(ids[-n:])[:, None]).sum())
            count += n
    assert float(loss) == pytest.approx(total / count, rel=1e-5)


def test_left_padding_and_positions():
    batch = TargetOnlyCollator(pad_id=0)([{"input_ids": [7, 8, 9], "target_len": 1},
                                          {"input_ids": [4, 5], "target_len": 1}])
    assert batch["input_ids"].tolist() == [[7, 8, 9], [0, 4, 5]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 9], [-100, 5]]


def test_pickle_only_model_directory_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    with pytest.raises(RefusedArtifact, match="only pickle weights"):
        models.resolve(str(tmp_path))


def test_relative_model_path_is_found_beside_the_suite(tmp_path, tiny_model_dir):
    link = tmp_path / "models" / "tiny"
    link.parent.mkdir()
    link.symlink_to(tiny_model_dir)
    spec = models.resolve("models/tiny", base_dir=tmp_path)
    assert spec.path == str(link.resolve())


@pytest.mark.skipif(torch.cuda.is_available(), reason="eager attention is the CPU training choice")
def test_cpu_training_runs_eager_attention_and_evaluation_goes_back_to_sdpa(tiny_model_dir, tmp_path, monkeypatch):
    from transformers.models.llama import modeling_llama

    from backends.lora import LoraBackend
    from harness.backend import TrainData

    from .test_backends_conformance import EXAMPLES, TASK

    calls = {"eager": 0}
    original = modeling_llama.eager_attention_forward

    def counting(*args, **kwargs):
        calls["eager"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(modeling_llama, "eager_attention_forward", counting)
    spec = ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32")
    options = LoraBackend.Options(max_steps=1, batch_size=2)
    handle = LoraBackend(options).train(spec, TrainData(EXAMPLES[:4], TASK, seed=0), tmp_path / "work")
    assert calls["eager"] > 0                                  # the training forward ran eager attention
    base = handle.model.get_base_model() if hasattr(handle.model, "get_base_model") else handle.model
    assert base.config._attn_implementation == "sdpa"          # evaluation runs SDPA


def _train_lora_watching(tiny_model_dir, tmp_path, train_dtype: str, watch, **options):
    """Train the tiny model with LoRA for a few steps, calling `watch(model)` inside every training forward."""
    from transformers import Trainer

    from backends.lora import LoraBackend
    from harness.backend import TrainData

    from .test_backends_conformance import EXAMPLES, TASK

    original = Trainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        watch(model)
        return original(self, model, inputs, *args, **kwargs)

    spec = ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype=train_dtype)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "compute_loss", compute_loss)
        return LoraBackend(LoraBackend.Options(batch_size=2, **options)).train(
            spec, TrainData(EXAMPLES[:4], TASK, seed=0), tmp_path / "work")


def test_bf16_lora_training_runs_the_frozen_base_in_bf16_and_gives_the_fp32_base_back(tiny_model_dir, tmp_path):
    seen, casts = [], set()

    def watch(model):
        from peft.tuners.tuners_utils import BaseTunerLayer

        casts.update(m.cast_input_dtype_enabled for m in model.modules() if isinstance(m, BaseTunerLayer))
        dtypes = {p.requires_grad: p.dtype for p in model.parameters()}
        head_inputs = []
        hook = model.get_output_embeddings().register_forward_pre_hook(
            lambda module, args: head_inputs.append(args[0].is_contiguous()))
        seen.append((dtypes, hook, head_inputs))

    reference, _ = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    handle = _train_lora_watching(tiny_model_dir, tmp_path, "bfloat16", watch, max_steps=2)
    assert seen and all(d == {False: torch.bfloat16, True: torch.float32} for d, _, _ in seen)
    assert casts == {False}      # autocast casts the adapters' input: PEFT's own fp32 cast is off
    assert all(all(inputs) for _, _, inputs in seen[:-1])   # the head got a contiguous input every step
    for _, hook, _ in seen:
        hook.remove()
    merged = dict(handle.model.named_parameters())
    # Evaluation gets the fp32 base back: weights untouched by LoRA are bit-equal to the loaded ones.
    for name, param in reference.named_parameters():
        if "embed" in name or "norm" in name:
            assert merged[name].dtype == torch.float32 and torch.equal(merged[name], param), name


def test_no_checkpoint_is_written_after_the_last_step(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import Trainer

    saved = []
    original = Trainer._save_checkpoint

    def save(self, *args, **kwargs):
        saved.append(self.state.global_step)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_save_checkpoint", save)
    _train_lora_watching(tiny_model_dir, tmp_path, "float32", lambda model: None, max_steps=4, checkpoint_every=2)
    assert saved == [2]        # not step 4: the finished artifact is saved right after it


_PROBE = """
import ctypes, torch
from harness.allocator import _glibc, keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = _glibc()
libc.mallinfo2.restype = MallInfo2

def mmapped():   # how much of a fresh 64 MiB tensor glibc served with its own mmap (0: from the heap)
    before = libc.mallinfo2().hblkhd
    block = torch.empty(16 * 1024 * 1024, dtype=torch.float32)
    during = libc.mallinfo2().hblkhd
    del block
    return during - before

seen = [mmapped()]
with keep_freed_memory():
    seen.append(mmapped())
    with keep_freed_memory():      # an evaluation call inside an arm's process
        pass
    seen.append(mmapped())          # the inner exit left the arm's policy in place
seen.append(mmapped())
import json; print(json.dumps(seen))
"""


def test_keep_freed_memory_serves_large_blocks_from_the_heap_and_restores_glibc_once_the_outermost_ends():
    """In a fresh process: a heap left fragmented by earlier tests could serve the block anyway."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from harness.allocator import _glibc

    if _glibc() is None:
        pytest.skip("glibc only")
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    default_before, inside, inside_after_nested, default_after = json.loads(out.strip().splitlines()[-1])
    mib64 = 64 * 1024 * 1024
    assert default_before >= mib64 and default_after >= mib64     # glibc's default: its own mmap
    assert inside == 0 and inside_after_nested == 0                # kept in the heap while the policy holds


def test_full_training_of_a_tied_embedding_gets_the_dense_gradient_without_a_dense_embedding_backward(tiny_model_dir):
    """The embedding's own gradient is sparse (its rows only) and lands in the head's dense one:
    the weight's .grad must be dense and equal to the plain dense computation's, two micro-batches
    accumulated."""
    from backends._options import TrainOptions
    from backends._sft import _prepare

    spec = ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32")
    plain, tok = models.load(spec)
    fast = _prepare(models.load(spec)[0], None, False, TrainOptions())
    assert fast.get_input_embeddings().sparse and fast.get_input_embeddings().weight is fast.lm_head.weight
    collate = TargetOnlyCollator(tok.pad_token_id)
    for ids in ([5, 6, 7, 8, 9, 10], [30, 31, 32, 33]):
        batch = collate([{"input_ids": ids, "target_len": 2}, {"input_ids": ids[::-1], "target_len": 3}])
        for model in (plain, fast):
            model(**batch).loss.backward()
    got, expected = fast.get_input_embeddings().weight.grad, plain.get_input_embeddings().weight.grad
    assert not got.is_sparse and torch.allclose(got, expected, atol=1e-6)
    assert got[5].abs().sum() > 0        # the embedding's rows took part


def _in_file_mappings(tensor, suffix: str) -> bool:
    address = tensor.data_ptr()
    for line in open("/proc/self/maps", encoding="utf-8"):
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end and len(fields) >= 6 and fields[5].endswith(suffix):
            return True
    return False


def test_full_fine_tuning_owns_its_weights_instead_of_writing_into_the_checkpoint_mapping(tiny_model_dir):
    """The optimizer's first write into the mmapped safetensors file is a copy-on-write fault per
    page (1 s for SmolLM2-135M here, against 0.2 s to copy them first)."""
    from pathlib import Path

    from backends._options import TrainOptions
    from backends._sft import _prepare

    if not Path("/proc/self/maps").exists():
        pytest.skip("reads Linux's /proc/self/maps")
    model, _ = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    assert any(_in_file_mappings(p, ".safetensors") for p in model.parameters())   # loaded zero-copy
    model = _prepare(model, None, False, TrainOptions())
    assert not any(_in_file_mappings(p, ".safetensors") for p in model.parameters())


def test_training_leaves_the_objects_alive_before_it_out_of_the_collectors_scans(tiny_model_dir, tmp_path):
    import gc

    frozen_during = []
    before = gc.get_freeze_count()
    _train_lora_watching(tiny_model_dir, tmp_path, "float32", lambda model: frozen_during.append(gc.get_freeze_count()),
                         max_steps=2)
    assert before == 0 and frozen_during and all(n > 1000 for n in frozen_during)
    assert gc.get_freeze_count() == 0         # thawed afterwards


def test_objects_frozen_leaves_a_freeze_made_by_someone_else_in_place():
    import gc

    from harness.allocator import objects_frozen

    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with objects_frozen():
            pass
        # still frozen: thawing would empty the permanent generation (objects in it may still die,
        # so the count can drop a little)
        assert gc.get_freeze_count() > frozen // 2
    finally:
        gc.unfreeze()


def test_training_counts_flops_as_trainer_does_but_walks_the_parameters_once(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import PreTrainedModel, Trainer, TrainingArguments

    from backends._sft import _counting_once

    model, _ = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    batch = {"input_ids": torch.ones(3, 7, dtype=torch.long)}
    expected = Trainer(model=model, args=args).floating_point_ops(batch)
    walks = []
    original = PreTrainedModel.num_parameters
    monkeypatch.setattr(PreTrainedModel, "num_parameters", lambda self, *a, **k: walks.append(1) or original(self, *a, **k))
    trainer = _counting_once(Trainer)(model=model, args=args)
    assert expected > 0 and [trainer.floating_point_ops(batch) for _ in range(3)] == [expected] * 3
    assert len(walks) == 1


def test_qlora_preparation_prints_no_deprecation_warning_from_the_libraries(tiny_model_dir):
    """PEFT's prepare_model_for_kbit_training reads a property transformers 5.25 deprecated: the
    FutureWarning it printed on every QLoRA run is not the user's to act on."""
    import warnings

    from backends._sft import _prepare
    from backends.lora import lora_config
    from backends.qlora import QLoraBackend

    model, _ = models.load(ModelSpec(ref="tiny", path=str(tiny_model_dir), train_dtype="float32"),
                           quantize_4bit=True, compute_dtype="bfloat16")
    options = QLoraBackend.Options()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        _prepare(model, lora_config(options), True, options)
