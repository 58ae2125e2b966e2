"""For the length of a bf16 evaluation on a CPU, each linear layer multiplies by a weight that
oneDNN packed once, instead of the plain weight it repacks into its blocked layout at every call.

Measured on 2 cores (AMD EPYC, avx512_bf16), SmolLM2-135M's shapes, bf16, the same values bit for
bit: a decoding step's 48 rows times the 1536 x 576 projection 0.30 ms against 0.23 ms packed
once, times the 49k x 576 output head 10.4 ms against 7.4 ms; a 2,048-row prompt block 3-8%
faster. The packed copies cost the linear weights' bf16 size again while the call runs, so a
model whose copies would take more than a quarter of the available memory keeps the plain path,
as do fp32 evaluations (fp32 predictions must match transformers' bit for bit) and any linear
that is not a plain torch.nn.Linear (4-bit layers, adapters' own wrappers call their plain base).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

MEMORY_SHARE = 0.25


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _can_pack() -> bool:
    import torch

    mkldnn = getattr(torch.ops, "mkldnn", None)
    return (torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_reorder_linear_weight")
            and hasattr(mkldnn, "_linear_pointwise") and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _packed_forward(module, packed, input):
    import torch

    if input.dtype != packed.dtype:     # a caller that left bf16: the plain product
        return torch.nn.functional.linear(input, module.weight, module.bias)
    return torch.ops.mkldnn._linear_pointwise(input, packed, module.bias, "none", [], "")


def _packable(model) -> list:
    import torch

    return [m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.dtype == torch.bfloat16
            and m.weight.device.type == "cpu" and (m.bias is None or m.bias.dtype == torch.bfloat16)]


@contextmanager
def prepacked_linears(model, enabled: bool = True):
    """Within this context, the model's bf16 CPU linears run on weights packed once (see above)."""
    linears = _packable(model) if enabled and _can_pack() else []
    needed = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    available = _available_bytes()
    if available is not None and needed > MEMORY_SHARE * available:
        linears = []
    bound = []
    try:
        import torch

        with torch.no_grad():
            for module in linears:
                packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach())
                module.forward = partial(_packed_forward, module, packed)
                bound.append(module)
        yield
    finally:
        for module in bound:
            del module.forward
