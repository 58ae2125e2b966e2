"""QLoRA: LoRA adapters on a base model quantized to 4-bit NF4 with double quantization.

bitsandbytes 0.50 runs 4-bit on CPU as well as CUDA, so this backend does not need a GPU.
"""

from __future__ import annotations

from pathlib import Path

from backends._options import LoraOptions
from backends.lora import lora_config
from harness.backend import ModelHandle, ModelSpec, TrainData


class QLoraBackend:
    name = "qlora"
    Options = LoraOptions
    needs_cuda = False

    def __init__(self, options: LoraOptions):
        self.options = options

    def train(self, model: ModelSpec, data: TrainData, workdir: Path) -> ModelHandle:
        from backends._sft import train_sft

        handle = train_sft(model, data, workdir, self.options, peft_config=lora_config(self.options),
                           quantize_4bit=True)
        # peft cannot fold an adapter trained on 4-bit layers into the dequantized fp32 ones (its
        # 4-bit LoRA layer expects a quant_state), so QLoRA evaluates with the adapter unmerged.
        dequantize_base_for_eval(handle.model)
        return handle


def dequantize_base_for_eval(peft_model) -> bool:
    """Swap the frozen 4-bit layers for fp32 layers holding exactly the NF4 values.

    On CPU, bitsandbytes dequantizes every weight on every forward, which made evaluation ~3x
    slower than the LoRA arm; the dequantized layers compute the same numbers (identical
    log-probs on the sentiment suite) once. The adapter saved on disk is unchanged.
    """
    import torch

    if torch.cuda.is_available():
        return False  # the CUDA 4-bit kernels are fast; evaluate the quantized model as trained
    from transformers.integrations.bitsandbytes import dequantize_and_replace

    base = peft_model.get_base_model()
    dequantize_and_replace(base, base.hf_quantizer.quantization_config, dtype=torch.float32)
    for name, param in base.named_parameters():   # the new fp32 layers are as frozen as the 4-bit ones
        if "lora_" not in name:
            param.requires_grad_(False)
    return True
