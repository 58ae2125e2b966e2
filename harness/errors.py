"""User-facing errors with the exit codes documented in the README, and secret redaction.

Exit codes: 0 ok; 1 regression found; 2 usage or suite error; 3 data error; 4 refused artifact;
5 training diverged; 6 out of memory or disk; 7 not comparable.

Every message is printed one problem per line: `error: <place>: <problem>; <what to do>`. Text
that came from a file or a model goes through `shown()` (one line, control characters escaped,
truncated), and every line through `redact()`, so neither a hostile row nor an API token in the
environment reaches a terminal, a log or a run directory through an error.
"""

from __future__ import annotations

import os
import re
from typing import Callable

# -- secrets -----------------------------------------------------------------------------------------

# Named explicitly, whatever their form; plus every variable whose name reads like a credential.
SECRET_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN", "HF_API_TOKEN", "WANDB_API_KEY",
                "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "COHERE_API_KEY", "MISTRAL_API_KEY", "GEMINI_API_KEY",
                "GOOGLE_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_OPENAI_API_KEY",
                "GITHUB_TOKEN", "GH_TOKEN", "COMET_API_KEY", "NEPTUNE_API_TOKEN", "MLFLOW_TRACKING_PASSWORD")
SECRET_NAME_PATTERN = re.compile(r"(?:TOKEN|_KEY|APIKEY|SECRET|PASSWORD|PASSWD|CREDENTIALS?|_AUTH)$|^KEY$"
                                 r"|SECRET|PASSWORD|API_KEY|ACCESS_KEY|PRIVATE_KEY", re.I)
# Values too short or too common to be a secret (redacting them would garble every message).
_NOT_SECRETS = {"true", "false", "none", "null", "yes", "no", "on", "off"}
MIN_SECRET_LENGTH = 8
# Token shapes that are secrets wherever they come from (not only the environment).
TOKEN_PATTERNS = (
    re.compile(r"\bhf_[A-Za-z0-9]{30,}"),                            # Hugging Face
    re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"),           # OpenAI, Anthropic
    re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{40,}"),  # GitHub
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),                  # Slack
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),                    # AWS access key id
)
AUTH_HEADER = re.compile(r"(?i)\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=-]{16,}")
URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@")   # scheme://user:PASSWORD@
REDACTED = "[REDACTED]"


def secret_values(environ=None) -> list[tuple[str, str]]:
    """(name, value) of every environment variable that holds a secret, longest value first."""
    environ = os.environ if environ is None else environ
    found = []
    for name, value in environ.items():
        if not value or len(value) < MIN_SECRET_LENGTH or value.lower() in _NOT_SECRETS or value.isdigit():
            continue
        if name.upper() in SECRET_NAMES or SECRET_NAME_PATTERN.search(name):
            found.append((name, value))
    return sorted(found, key=lambda item: -len(item[1]))


def redactor(environ=None) -> Callable[[str], str]:
    """redact() with the environment's secrets looked up once (for many calls in a row)."""
    secrets = secret_values(environ)

    def apply(text) -> str:
        text = "" if text is None else str(text)
        for name, value in secrets:
            if value in text:
                text = text.replace(value, f"[REDACTED:{name}]")
        for pattern in TOKEN_PATTERNS:
            text = pattern.sub(REDACTED, text)
        text = AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        return URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)

    return apply


def redact(text, environ=None) -> str:
    """`text` with secrets replaced: the values of secret environment variables (HF_TOKEN,
    WANDB_API_KEY, OPENAI_API_KEY, any *_TOKEN / *_KEY / *_SECRET / *PASSWORD ...) by
    `[REDACTED:NAME]`, and well-known token shapes (hf_..., sk-..., ghp_..., AKIA..., Bearer ...)
    and passwords in URLs by `[REDACTED]`.

    Call it on every text that leaves the process for a file, a log or a terminal and may hold an
    exception's message: error strings, tracebacks, results.json before it is written."""
    return redactor(environ)(text)


# -- showing untrusted text in a one-line message -------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_BUT_LAYOUT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def one_line(text) -> str:
    """Control characters (newlines, ANSI escapes, bidi overrides) written as escapes: one safe line."""
    return _CONTROL.sub(_escape, str(text))


def printable(text) -> str:
    """Control characters written as escapes, except tab and line breaks (for multi-line text)."""
    return _CONTROL_BUT_LAYOUT.sub(_escape, str(text))


def shown(value, limit: int = 80) -> str:
    """A value from a file or a model, for an error message: its repr on one line, secrets redacted
    (before truncating, so no prefix of one survives), at most `limit` characters."""
    import reprlib

    brief = reprlib.Repr()
    brief.maxstring = brief.maxother = limit * 2
    brief.maxlist, brief.maxdict, brief.maxlevel = 8, 8, 3
    text = one_line(redact(brief.repr(value) if not isinstance(value, str) else repr(value)))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- errors ------------------------------------------------------------------------------------------------

class HarnessError(Exception):
    """An expected failure with a message fit for the user (no traceback needed).

    `message` may hold several lines, one problem each; `hint` (what to do) is appended to the
    last line, so each problem is exactly one line on stderr. Both are redacted on construction,
    so str(exc), tracebacks and anything built from them carry no secret."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        message, hint = redact(message), (redact(hint) if hint else None)
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return "\n".join(line.removeprefix("error: ") for line in self.lines())

    def lines(self) -> list[str]:
        """The text printed on stderr: one line per problem, each with what to do."""
        text = [one_line(line) for line in self.message.splitlines() if line.strip()] or ["failed"]
        if self.hint:
            text[-1] = f"{text[-1]}; {one_line(self.hint)}"
        return [f"error: {line}" for line in text]


class SuiteError(HarnessError):
    """Every problem of a suite (or of a file it names), each `place: problem; fix` on its own line.

    `problems` holds strings about `path` itself, or (other_file, problem) pairs."""

    exit_code = 2

    def __init__(self, path, problems: list):
        self.path = str(path)
        self.problems = [redact(p if isinstance(p, str) else f"{p[0]}: {p[1]}") for p in problems]
        body = "\n".join(f"{self.path}: {p}" if isinstance(p, str) else f"{p[0]}: {p[1]}" for p in problems)
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
