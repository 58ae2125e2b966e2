"""Output safety: what comes from data, models, arm names or errors renders as inert text in
report.md and report.html, and secrets from the environment never reach stderr, reports or a run
directory.

The reports are checked by parsing them: report.md through a CommonMark renderer with GFM tables
(markdown-it-py, raw HTML enabled as viewers do), report.html with the standard HTML parser; the
payloads must come out as text, and the markup must be exactly the markup a benign report has.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import DataError, one_line, printable, redact, secret_values
from harness.results import ArmResult
from reports.html import render_html
from reports.markdown import render_markdown

from .conftest import REVIEWS, make_suite, write_jsonl
from .report_fixture import build_results

PAYLOADS = [
    "<script>alert(1)</script>", '<img src=x onerror="alert(2)">', "<svg onload=alert(3)>",
    '"><iframe src="javascript:alert(4)">', "</td></tr></table><h1>owned</h1>", "<!-- hidden -->",
    "[click](javascript:alert(5))", "![pixel](https://evil.example/p.png)", "<https://evil.example/auto>",
    "[ref]: https://evil.example/ref", "| fake | cell |", "line one\nline two\r\n| new row |",
    "`code` ``double`` ```fence```", "**bold** __strong__ _em_ *em* ~~strike~~ $x^2$", "# heading",
    "- list item", "1. ordered", "> quote", "---", "{{ 7*191 }}", "{% for x in range(3) %}loop{% endfor %}",
    "${7*191}", "#{7*191}", "<%= 7*191 %>", "\\| backslash pipe \\", "&lt;already escaped&gt; &amp; &#60;",
    "\x1b[31mred\x1b[0m", "\u202eevil bidi",
]
PAYLOAD = " ".join(PAYLOADS)
EVALUATED = "1337"                                       # 7*191: a template that ran
SECRETS = {"HF_TOKEN": "hf_FAKEfakeFAKEfakeFAKEfakeFAKEfake1234",
           "WANDB_API_KEY": "0123456789abcdef0123456789abcdef0badc0de",
           "OPENAI_API_KEY": "sk-FAKEfakeFAKEfakeFAKEfake0000",
           "MY_SERVICE_TOKEN": "svc-token-0f9e8d7c", "DB_PASSWORD": "correct-horse-battery",
           "PAYMENTS_SECRET": "whsec_notreal_12345", "ACME_KEY": "acme-key-material-42"}


def visible(text: str) -> str:
    """What an escaped report shows for `text`: one line, control characters as escapes."""
    return one_line(" ".join(text.split()))


# -- redact() --------------------------------------------------------------------------------------------

def test_redact_replaces_secret_environment_values_and_token_shapes():
    env = {**SECRETS, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HOME": "/root",
           "SHORT_TOKEN": "abc", "PORT_KEY": "123456789", "PATH": "/usr/bin"}
    text = " ".join(f"{k}={v}" for k, v in SECRETS.items())
    text += (" url https://alice:s3cretpass@mirror.example/simple Authorization: Bearer abcdefghijklmnop0123"
             " ghp_" + "a" * 36 + " AKIAABCDEFGHIJKLMNOP hf_" + "Z" * 34 + " false /root /usr/bin 123456789")
    out = redact(text, env)
    for name, value in SECRETS.items():
        assert value not in out and f"{name}=[REDACTED:{name}]" in out
    assert "alice:[REDACTED]@mirror.example" in out and "Bearer [REDACTED]" in out
    assert "ghp_" not in out and "AKIA" not in out and "hf_Z" not in out
    assert out.endswith(" false /root /usr/bin 123456789")        # not secrets: left alone
    assert {name for name, _ in secret_values(env)} == set(SECRETS)
    assert redact(None, env) == "" and redact("nothing here", env) == "nothing here"


def test_errors_are_redacted_and_one_line_per_problem(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    err = DataError(f"data.jsonl:3: label {SECRETS['HF_TOKEN']!r}\x1b[2J\nsecond problem", f"unset {SECRETS['ACME_KEY']}")
    text = "\n".join(err.lines()) + str(err) + err.message
    assert not any(value in text for value in SECRETS.values())
    assert err.lines() == ["error: data.jsonl:3: label '[REDACTED:HF_TOKEN]'\\x1b[2J",
                           "error: second problem; unset [REDACTED:ACME_KEY]"]


def test_cli_stderr_is_redacted(tmp_path, monkeypatch):
    """A secret that reaches an error message (here: a bad label) is redacted on stderr."""
    monkeypatch.setenv("HF_TOKEN", SECRETS["HF_TOKEN"])
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"")
    suite = make_suite(tmp_path, model)
    write_jsonl(tmp_path / "data" / "test.jsonl", [{"text": "x", "label": SECRETS["HF_TOKEN"]}])
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(tmp_path / "run")])
    assert result.exit_code == 3, result.output
    assert SECRETS["HF_TOKEN"] not in result.output and "row 1: '[REDACTED:HF_TOKEN]'" in result.stderr
    assert not (tmp_path / "run").exists()


# -- reports: payloads are inert text --------------------------------------------------------------------

def _inject(results, run_dir: Path, payload: str):
    """The fixture run with `payload` in every place text from a suite, the data, a model or an error
    reaches the reports: arm names (tables, charts, example view), backend, error, reasons, policy,
    suite name, model, data and general sources, metric variant, environment, samples."""
    arms = {}
    for name, arm in results.arms.items():
        arms[payload if name == "qlora" else name] = arm
    arms[f"failed {payload}"] = ArmResult(backend=payload, options={"note": payload}, status="failed", exit_code=5,
                                          error=payload)
    results.arms = arms
    results.arms["lora"].backend = payload
    results.suite["name"] = payload
    results.model["ref"] = payload
    results.data["test"].source = payload
    results.metrics["accuracy"]["variant"] = payload
    results.environment["device"] = payload
    results.general.tasks["wikitext"].source = payload
    results.decision.reasons.append(payload)
    results.decision.policy["prefer"] = payload
    lora = results.arms["lora"]
    fixed = set(map(str, lora.changes.fixed[:3]))
    rows = [json.loads(line) for line in (run_dir / lora.samples).read_text().splitlines()]
    for row in rows:
        if row["id"] in fixed:
            row.update(prompt=payload, target=payload, prediction=payload)
    (run_dir / lora.samples).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return results


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.text, self.rows = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, name, value or "") for name, value in attrs]
        if tag == "tr":
            self.rows.append(0)
        if tag in ("td", "th") and self.rows:
            self.rows[-1] += 1

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


def _markdown_to_html(text: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(text)


@pytest.fixture
def benign(tmp_path):
    run_dir = tmp_path / "benign"
    return build_results(run_dir), run_dir


@pytest.fixture
def hostile(tmp_path):
    run_dir = tmp_path / "hostile"
    return _inject(build_results(run_dir), run_dir, PAYLOAD), run_dir


def test_markdown_report_shows_payloads_as_text(benign, hostile):
    raw = render_markdown(hostile[0])
    assert EVALUATED not in raw and "\x1b" not in raw and "\u202e" not in raw
    html, reference = _parse(_markdown_to_html(raw)), _parse(_markdown_to_html(render_markdown(benign[0])))
    assert set(html.tags) <= {"h1", "h2", "h3", "p", "ul", "li", "strong", "table", "thead", "tbody", "tr", "th",
                              "td"}, sorted(set(html.tags))
    assert set(html.tags) == set(reference.tags)
    assert {a[:2] for a in html.attrs} == {a[:2] for a in reference.attrs} <= {("th", "style"), ("td", "style")}
    text = "".join(html.text)
    shown = visible(PAYLOAD)
    # the payload is visible verbatim: in the title, the verdict reasons, the failed arm's error...
    assert text.count(shown) >= 5, text[:2000]
    # ...and no table gained or lost a cell: every row has as many cells as its table's header
    tables = re.findall(r"<table>(.*?)</table>", _markdown_to_html(raw), re.S)
    assert len(tables) >= 4
    for table in tables:
        counts = _parse(table).rows
        assert len(set(counts)) == 1, counts


def test_markdown_raw_text_has_no_live_syntax():
    from reports.markdown import md

    escaped = md(PAYLOAD)
    assert "\n" not in escaped and "<" not in escaped and ">" not in escaped
    assert not re.search(r"(?<!\\)(?:\\\\)*[|`*~$]", escaped)                # every such character escaped
    assert "](" not in escaped and "://" not in escaped and "www." not in md("see www.evil.example")
    for start in ("# x", "- x", "+ x", "1. x", "2) x", "---"):
        assert md(start).startswith("\\") or md(start)[1] == "\\", md(start)


def test_html_report_shows_payloads_as_text(benign, hostile):
    results, run_dir = hostile
    html = render_html(results, run_dir)
    assert EVALUATED not in html and "\x1b" not in html
    parsed, reference = _parse(html), _parse(render_html(*benign))
    assert set(parsed.tags) == set(reference.tags), set(parsed.tags) ^ set(reference.tags)
    assert {a[:2] for a in parsed.attrs} == {a[:2] for a in reference.attrs}
    assert parsed.tags.count("script") == 1 and reference.tags.count("script") == 1
    assert not [a for a in parsed.attrs if a[1].startswith("on")]
    assert all(value.startswith("#") for tag, name, value in parsed.attrs if name in ("href", "src", "action"))
    text = "".join(parsed.text)
    # verbatim (line breaks kept, control characters as escapes) in <pre>, table cells, the title...
    assert text.count(printable(PAYLOAD)) >= 5 and "\\x1b[31mred" in text
    for svg in re.findall(r"<svg\b.*?</svg>", html, re.S):  # chart labels are escaped text too
        tags = set(re.findall(r"<([a-zA-Z]+)", svg))
        assert tags <= {"svg", "title", "text", "rect", "line", "path", "polyline", "circle", "g"}, tags


def test_reports_redact_secrets(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    secret_text = " ".join(f"{k}={v}" for k, v in SECRETS.items())
    run_dir = tmp_path / "run"
    results = _inject(build_results(run_dir), run_dir, f"failure with {secret_text}")
    for text in (render_markdown(results), render_html(results, run_dir)):
        assert not any(value in text for value in SECRETS.values())
        assert "HF_TOKEN=[REDACTED:HF_TOKEN]" in text


# -- a run end to end: no secret in any file of the run directory, or in its output ---------------------

def _fake_secret_env() -> dict:
    return {**os.environ, **SECRETS, "HARNESS_PROGRESS": "0"}


def test_no_secret_in_a_run_directory_or_its_output(tmp_path, tiny_model_dir):
    """An arm fails with an exception whose message carries a secret (as a library's error may echo a
    token): the secret must not reach results.json, error.txt, samples, reports, stdout or stderr."""
    token = SECRETS["HF_TOKEN"]
    backends = ("  zero-shot: {type: prompt, shots: 0}\n"
                f"  leaky: {{type: lora, max_steps: 1, batch_size: 4, target_modules: [{token}]}}\n")
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=backends)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(suite), "--out", str(out)],
                          capture_output=True, text=True, env=_fake_secret_env(), timeout=600)
    assert done.returncode == 5, done.stderr[-3000:]
    assert "[REDACTED:HF_TOKEN]" in (out / "arms" / "leaky" / "error.txt").read_text()
    leaks = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes().decode("utf-8", "replace")
        leaks += [f"{path.relative_to(out)}: {name}" for name, value in SECRETS.items() if value in data]
    for stream, data in (("stdout", done.stdout), ("stderr", done.stderr)):
        leaks += [f"{stream}: {name}" for name, value in SECRETS.items() if value in data]
    assert not leaks, leaks
    results = json.loads((out / "results.json").read_text())
    assert results["arms"]["leaky"]["status"] == "failed" and "[REDACTED:HF_TOKEN]" in results["arms"]["leaky"]["error"]
    assert results["arms"]["zero-shot"]["status"] == "ok"


def test_reviews_fixture_is_benign():
    """The payload tests rely on the shared fixture's texts carrying no payload of their own."""
    assert not any(set(text) & set("<>|`*{}$") for text, _ in REVIEWS)
