"""User-facing errors. Each carries the exit code documented in the README.

Exit codes: 0 ok; 1 regression found; 2 usage or suite error; 3 data error; 4 refused artifact;
5 training diverged; 6 out of memory or disk; 7 not comparable.
"""

from __future__ import annotations


class HarnessError(Exception):
    """An expected failure with a message fit for the user (no traceback needed)."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        """The text printed on stderr, one problem per line."""
        text = [f"error: {line}" for line in self.message.splitlines()]
        if self.hint:
            text.append(f"hint: {self.hint}")
        return text


class SuiteError(HarnessError):
    exit_code = 2

    def __init__(self, path, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        body = "\n".join(f"{self.path}: {p}" for p in problems)
        super().__init__(body)


class UsageError(HarnessError):
    exit_code = 2


class DataError(HarnessError):
    exit_code = 3


class RefusedArtifact(HarnessError):
    exit_code = 4


class BackendError(HarnessError):
    """A backend failed in an expected way (bad option combination, unsupported model...)."""

    exit_code = 5


class TrainingDiverged(BackendError):
    exit_code = 5


class ResourceError(HarnessError):
    exit_code = 6


class NotComparable(HarnessError):
    exit_code = 7
