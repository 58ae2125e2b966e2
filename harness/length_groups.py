"""Cut rows of different lengths into padded batches that waste the fewest positions.

Every forward pays for its padding and for being one more forward (each weight read again, ~1,000
more small ops). Filling batches greedily up to a token budget keeps the forwards few but pads
every row of a batch to its longest: the 48 headline prompts' prompt pass ran 4,749 positions for
4,050 tokens that way, and 4,185 when cut here (2-core CPU, SmolLM2-135M). Training uses the same
cut for a micro-batch holding rows of very different lengths (backends/_length_groups.py).
"""

from __future__ import annotations

import math

# What one more forward costs beyond its tokens, in positions. A forward+backward of SmolLM2-135M
# over 64 positions takes about as long as 64 more positions in a bigger batch (2 cores), and a
# bf16 prompt forward's fixed cost (20-30 ms) is worth about as many.
FORWARD_OVERHEAD = 64


def length_groups(lengths: list[int], overhead: int = FORWARD_OVERHEAD, budget: int | None = None,
                  max_rows: int | None = None) -> list[list[int]]:
    """Row indices in groups, longest rows first, minimising the padded positions plus `overhead`
    per group. A group of several rows holds at most `budget` padded positions and `max_rows` rows
    (a single row may exceed the budget: it cannot be cut).

    Sorted by length, an optimal grouping is a set of contiguous runs, so a dynamic programme over
    the cut points finds it; with max_rows it looks back at most that far (linear in the rows)."""
    order = sorted(range(len(lengths)), key=lambda row: -lengths[row])
    look_back = max_rows or len(order)
    best = [0.0] + [math.inf] * len(order)       # best[i]: the cheapest cost of the first i sorted rows
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end - 1, max(0, end - look_back) - 1, -1):
            rows, width = end - start, lengths[order[start]]
            if rows > 1 and budget is not None and rows * width > budget:
                break        # longer runs only grow: starting further back adds rows at least as wide
            cost = best[start] + rows * width + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(order)
    while end > 0:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]
