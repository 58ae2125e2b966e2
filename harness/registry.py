"""Backend discovery through the `harness.backends` entry-point group.

The built-in backends register themselves exactly like a third-party package would, so there is
one discovery path. Loading a backend class imports only its module (pydantic options); heavy
libraries are imported inside `train()`.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from importlib.metadata import entry_points

GROUP = "harness.backends"


@lru_cache(maxsize=1)
def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def names() -> list[str]:
    return sorted(_entry_points())


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_message(type_name: str) -> str:
    known = names()
    if not known:
        return (f"unknown backend type {type_name!r}: no backends are registered; "
                "install the project (pip install -e .) so its entry points exist")
    return (f"unknown backend type {type_name!r}{did_you_mean(type_name, known)}; "
            f"known types: {', '.join(known)}")


@lru_cache(maxsize=None)
def get(type_name: str):
    """The backend class registered under `type_name`; KeyError with a helpful message if none."""
    eps = _entry_points()
    if type_name not in eps:
        raise KeyError(unknown_message(type_name))
    return eps[type_name].load()
