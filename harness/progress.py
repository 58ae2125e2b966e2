"""Progress bars on a terminal; silent when output is piped or CI=true."""

from __future__ import annotations

import os
import sys


def enabled() -> bool:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return False
    return sys.stderr.isatty()


def bar(iterable, desc: str, unit: str = "it", total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit=unit, total=total, disable=not enabled(), leave=False,
                dynamic_ncols=True)
