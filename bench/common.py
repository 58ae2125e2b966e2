"""What every part of the benchmark shares: the matmul peak, FLOP counts, timing and the workloads.

FLOP convention (PaLM's model FLOPs, attention left out): a forward pass costs 2·N FLOPs per
token and a training step 6·N, where N counts every parameter once (SmolLM2's output head is tied
to the embedding, so it is counted once: it is a real matmul at every position a naive
implementation scores). Utilisation is those FLOPs over the wall time, divided by the bf16 matmul
peak this process measures itself.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _suite_default_batch_tokens() -> int:
    from harness.suite import EvalSpec

    return EvalSpec.model_fields["batch_tokens"].default


BATCH_TOKENS = _suite_default_batch_tokens()   # harness runs as `harness compare` does by default


def matmul_peak(dtype_name: str, size: int = 2048, repeats: int = 8) -> float:
    """Best sustained GFLOP/s of a square matmul in this dtype (a few sizes, best taken)."""
    import torch

    dtype = getattr(torch, dtype_name)
    best = 0.0
    for n in (size // 2, size, size * 2):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.matmul(a, b)                                   # warm-up: thread pool, kernel choice
        start = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b)
        seconds = time.perf_counter() - start
        best = max(best, 2 * n ** 3 * repeats / seconds / 1e9)
    return best


@contextmanager
def timed(into: dict, key: str):
    start = time.perf_counter()
    yield
    into[key] = time.perf_counter() - start


@dataclass
class Figure:
    """One measured side: what ran, how long, how many tokens, and the FLOPs those tokens imply."""

    name: str
    seconds: float
    tokens: int
    flops: float = 0.0
    runs_s: list[float] | None = None    # every run's seconds, when the side ran more than once (fastest)
    computed_tokens: int | None = None   # the positions it ran, where it ran fewer than `tokens` (shared prefixes)

    def describe(self, peak_gflops: float) -> dict:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        util = self.flops / self.seconds / (peak_gflops * 1e9) if self.seconds and peak_gflops else 0.0
        out = {"seconds": round(self.seconds, 3), "tokens": self.tokens, "tokens_per_s": round(rate, 1),
               "fraction_of_bf16_peak": round(util, 3)}
        if self.computed_tokens is not None and self.tokens:
            out["computed_tokens"] = self.computed_tokens
            out["fraction_of_bf16_peak_computed"] = round(util * self.computed_tokens / self.tokens, 3)
        if self.runs_s:
            out["runs_s"] = self.runs_s
        return out


def alternate(repeats: int, *measures) -> list[list]:
    """Each measure's results over `repeats` rounds, the measures called in turn within a round
    (a, b, a, b, ...): the sides of a headline pair meet the machine's slow spells alike (fastest)."""
    runs = [[] for _ in measures]
    for _ in range(repeats):
        for out, measure in zip(runs, measures):
            out.append(measure())
    return runs


def fastest(runs: list[tuple]) -> tuple:
    """The fastest of one side's runs, each (result, Figure); its Figure lists every run's seconds.

    A headline pair (harness and the alternative it is compared with) runs `--repeats` times,
    alternated. This machine's speed drifts by 10-40% over tens of seconds: one run of a 5 s side
    can fall into a slow spell that a 45 s side averages out. Alternating gives both sides the same
    chances, and the fastest run is the least disturbed one (as timeit reports)."""
    result, figure = min(runs, key=lambda run: run[1].seconds)
    figure.runs_s = [round(run[1].seconds, 3) for run in runs] if len(runs) > 1 else None
    return result, figure


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def load_suite_data(suite_file: str):
    from harness.data import load_data
    from harness.suite import load_suite

    suite = load_suite(ROOT / "suites" / suite_file)
    return suite, load_data(suite)


def load_general():
    from harness.general import load_general_set

    return load_general_set(ROOT / "suites" / "general" / "default.yaml")


def load_model(ref: str, dtype: str = "float32"):
    """(model, tokenizer, spec): the harness's own loader, then cast if asked (lm-eval's bf16 path)."""
    import torch

    from harness import models

    spec = models.resolve(ref)
    model, tokenizer = models.load(spec)
    return model.to(getattr(torch, dtype)).eval(), tokenizer, spec


def fresh_start() -> None:
    """Before each trainer's run: collect garbage and hand the heap back to the system, so no run
    inherits the one before it's leftovers (the same for every side)."""
    import gc

    from harness.allocator import release_freed_memory

    gc.collect()
    release_freed_memory()


@contextmanager
def harness_settings(model=None):
    """The process settings harness applies around its own training and evaluation calls, lent to
    an alternative for a like-for-like figure: glibc keeps freed memory; without a model (a
    training run) the objects alive before it stay out of the collector's scans; with one (an
    evaluation) attention on a CPU runs through harness.attention and bf16 linears on weights
    packed once (harness.prepacked). The headline comparison runs the alternatives as their users
    do, without them."""
    from harness.allocator import keep_freed_memory, objects_frozen
    from harness.attention import fast_cpu_attention
    from harness.prepacked import prepacked_linears

    with keep_freed_memory():
        if model is None:
            with objects_frozen():
                yield
            return
        with fast_cpu_attention(model), prepacked_linears(model):
            yield
