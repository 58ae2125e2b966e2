"""Bad input through the CLI: one line per problem on stderr naming its place and a fix, the
documented exit code (2 suite, 3 data, 4 refused artifact), no traceback, nothing written.

Every case builds a small suite around one mistake and runs `harness validate` and/or
`harness compare` with click's CliRunner. No model loads: the suite points at a stub model
directory (config.json + an empty safetensors file) that passes the pre-load checks, and every
case fails before a model would be needed.

`harness validate` reads the suite (and its general set file), not the data rows: data mistakes
(exit 3) are caught by `compare` before it writes anything, so those cases run `compare` only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import SuiteError

from .conftest import REVIEWS, write_jsonl

SUITE = """name: bad
model: {model}
task:
  kind: classification
  system: You classify sentiment.
  prompt: "Review: {{text}}\\nIs this review positive or negative?"
  labels: [negative, positive]
data: {{train: data/train.jsonl, test: data/test.jsonl}}
metrics: [accuracy, macro_f1]
backends:
  zero-shot: {{type: prompt, shots: 0}}
  few-shot: {{type: prompt, shots: 2}}
  lora: {{type: lora, max_steps: 2, learning_rate: 1e-4}}
"""
ROWS = [{"id": f"r{i}", "text": t, "label": y} for i, (t, y) in enumerate(REVIEWS)]
BOTH, COMPARE = ("validate", "compare"), ("compare",)


def stub_model(directory: Path, config: dict | None = None, weights: str = "model.safetensors") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config or {"model_type": "llama"}))
    (directory / weights).write_bytes(b"\x80\x04not loaded" if weights.endswith(".bin") else b"")
    return directory


def write_suite(d: Path, text: str | None = None) -> Path:
    """A valid suite in `d` (data, stub model); `text` replaces the suite file's text."""
    stub_model(d / "model")
    write_jsonl(d / "data" / "train.jsonl", ROWS[:8])
    write_jsonl(d / "data" / "test.jsonl", ROWS[8:])
    path = d / "suite.yaml"
    path.write_text(text if text is not None else SUITE.format(model="model"), encoding="utf-8")
    return path


def edited(old: str, new: str) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        path = write_suite(d)
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new), encoding="utf-8")
        return path
    return build


def appended(extra: str) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        path = write_suite(d)
        path.write_text(path.read_text() + extra, encoding="utf-8")
        return path
    return build


def with_file(relative: str, content: str | bytes, then: Callable[[Path], Path] | None = None):
    """The valid suite (or `then`'s), plus one file written or replaced."""
    def build(d: Path) -> Path:
        path = (then or write_suite)(d)
        target = d / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        (target.write_bytes if isinstance(content, bytes) else target.write_text)(content)
        return path
    return build


def general(set_text: str, files: dict[str, str | bytes] | None = None):
    """The valid suite with `general: gen.yaml`, that set file, and its data files."""
    def build(d: Path) -> Path:
        path = appended("general: gen.yaml\n")(d)
        (d / "gen.yaml").write_text(set_text)
        for name, content in (files or {}).items():
            (d / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        return path
    return build


def model_dir(config: dict | None = None, weights: str = "model.safetensors", extra: dict | None = None):
    def build(d: Path) -> Path:
        path = write_suite(d)
        stub_model(d / "other", config, weights)
        for name, content in (extra or {}).items():
            (d / "other" / name).write_text(content)
        path.write_text(path.read_text().replace("model: model", "model: other"))
        return path
    return build


def billion_laughs(d: Path) -> Path:
    """The classic: 9 levels of 9 aliases each, 9^9 = 387 million strings once expanded, as the labels."""
    path = write_suite(d)
    anchors = "".join(f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 10))
    text = path.read_text().replace("labels: [negative, positive]", "labels: *a9")
    path.write_text("x-anchors:\n  - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + anchors + text)
    return path


def three_problems(d: Path) -> Path:
    path = write_suite(d)
    text = path.read_text().replace("max_steps: 2", "max_steps: 0").replace("macro_f1]", "f2]")
    path.write_text(text + "colour: blue\n")
    return path


@dataclass
class Case:
    id: str
    build: Callable[[Path], Path]
    code: int
    expected: list[str]                      # substrings of stderr: the place, the problem, the fix
    commands: tuple[str, ...] = BOTH
    lines: int = 1                           # problems, one line each
    env: dict = field(default_factory=dict)


CASES = [
    # -- the suite file: exit 2 from validate and compare ------------------------------------------
    Case("yaml-syntax", edited("metrics: [accuracy, macro_f1]", "metrics: [accuracy, macro_f1"), 2,
         ["suite.yaml: line 10, column 9: invalid YAML:", "while parsing a flow sequence at line 9",
          "check the brackets, quotes and indentation"]),
    Case("yaml-duplicate-key", appended("name: again\n"), 2,
         ["suite.yaml: line 14, column 1: invalid YAML: duplicate key 'name' (first at line 1); keep one of them"]),
    Case("yaml-alias-bomb", billion_laughs, 2,
         ["invalid YAML: aliases expand this to more than 1,000,000 values", "remove the nested aliases"]),
    Case("yaml-alias-chain-too-deep", appended("chain:\n  a0: &a0 [1]\n" + "".join(
        f"  a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 150))), 2,
         ["invalid YAML: aliases nest deeper than 100 levels; remove the nested aliases (*name)"]),
    Case("yaml-recursive-alias", appended("x: &loop [*loop]\n"), 2,
         ["line 14, column 4: invalid YAML: an alias refers to the collection that contains it",
          "remove the alias (*name) inside its own anchor"]),
    Case("yaml-deep-nesting-flow", appended("x: " + "[" * 5000 + "]" * 5000 + "\n"), 2,
         ["line 14, column 103: invalid YAML: nesting deeper than 100 levels; flatten the structure"]),
    Case("yaml-deep-nesting-block", appended("x:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 300))), 2,
         ["invalid YAML: nesting deeper than 100 levels; flatten the structure"]),
    Case("yaml-non-utf8", with_file("suite.yaml", SUITE.format(model="model").replace(
        "You classify", "Vous classez l'\xe9").encode("latin-1"), then=write_suite), 2,
         ["suite.yaml: line 5, column 26: byte 0xe9 is not UTF-8; save the file as UTF-8"]),
    Case("yaml-control-character", edited("You classify", "You\x00 classify"), 2,
         ["suite.yaml: line 5, column 14: invalid YAML: control character U+0000 is not allowed; remove it"]),
    Case("yaml-python-tag", appended("seed: !!python/object/apply:os.system [echo pwned]\n"), 2,
         ["line 14, column 7: invalid YAML: could not determine a constructor for the tag",
          "only plain YAML is read (no !!python/... objects)"]),
    Case("yaml-tab-indent", edited("  kind: classification", "\tkind: classification"), 2,
         ["line 4, column 1: invalid YAML: found character '\\t' that cannot start any token; indent with spaces"]),
    Case("yaml-too-big", appended("# " + "x" * (1 << 21) + "\n"), 2,
         ["suite.yaml: 2,097,", "bytes, more than a suite file should be (1,048,576); check that this is the suite"]),
    Case("suite-not-a-mapping", with_file("suite.yaml", "- just\n- a list\n"), 2,
         ["suite.yaml: the suite must be a mapping of keys", "see the suite reference in the README"]),
    Case("suite-file-missing", lambda d: d / "nope.yaml", 2, ["nope.yaml: suite file not found; check the path"]),
    Case("suite-is-a-directory", lambda d: (d / "dir.yaml").mkdir() or d / "dir.yaml", 2,
         ["dir.yaml: is a directory; give the suite YAML file"]),
    Case("unknown-key", appended("colour: blue\n"), 2,
         ["suite.yaml: colour: unknown key; remove it or check its spelling (keys here: name, model,"]),
    Case("unknown-nested-key", edited("  labels:", "  lables: [a]\n  labels:"), 2,
         ["suite.yaml: task.lables: unknown key (did you mean labels?); remove it or check its spelling"]),
    Case("unknown-backend-option", edited("lora: {type: lora,", "lora: {type: lora, alpah: 4,"), 2,
         ["suite.yaml: backends.lora.alpah: unknown option for type lora (did you mean alpha?); options: epochs, "]),
    Case("unknown-backend-type", edited("{type: lora,", "{type: lorra,"), 2,
         ["suite.yaml: backends.lora.type: unknown backend type 'lorra' (did you mean lora?); known types:"]),
    Case("unknown-metric", edited("[accuracy, macro_f1]", "[acuracy, macro_f1]"), 2,
         ["suite.yaml: metrics.0: unknown metric 'acuracy' (did you mean accuracy?); known: accuracy,"]),
    Case("wrong-type", appended("seed: zero\n"), 2,
         ["suite.yaml: seed: Input should be a valid integer", "(got 'zero'); write a whole number"]),
    Case("wrong-type-option", edited("max_steps: 2", "max_steps: two"), 2,
         ["backends.lora.max_steps: Input should be a valid integer", "(got 'two'); write a whole number"]),
    Case("wrong-type-long-value", appended("seed: " + "x" * 5000 + "\n"), 2,
         ["seed: Input should be a valid integer", "…); write a whole number"]),
    Case("fractional-int", edited("max_steps: 2", "max_steps: 2.5e0"), 2,
         ["backends.lora.max_steps: Input should be a valid integer, got a number with a fractional part",
          "(got 2.5); write a whole number"]),
    Case("out-of-range", edited("shots: 2}", "shots: -1}"), 2,
         ["backends.few-shot.shots: Input should be greater than or equal to 0 (got -1); change the value"]),
    Case("missing-required-key", edited("  prompt:", "  promt:"), 2,
         ["task.prompt: Field required; add it (User message template", "task.promt: unknown key (did you mean prompt?)"],
         lines=2),
    Case("malformed-template", edited("Review: {text}", "Review: {text"), 2,
         ["suite.yaml: task.prompt: expected '}' before end of string", "write {{ and }} for literal braces"]),
    Case("template-attribute-access", edited("Review: {text}", "Review: {text.__class__}"), 2,
         ["task.prompt: {text.__class__} is not a column name; write {column} with a column of the data"]),
    Case("three-problems-at-once", three_problems, 2,
         ["colour: unknown key", "backends.lora.max_steps: Input should be greater than 0 (got 0)",
          "metrics.1: unknown metric 'f2'"], lines=3),
    Case("data-file-missing", lambda d: (write_suite(d), (d / "data" / "test.jsonl").unlink())[0], 2,
         ["suite.yaml: data.test: file 'data/test.jsonl' not found (paths are relative to the suite file",
          "; fix the path"]),
    Case("data-path-is-a-directory", edited("test: data/test.jsonl", "test: data"), 2,
         ["data.test: 'data' is a directory; give a .jsonl, .csv or .parquet file"]),
    Case("model-dir-missing", edited("model: model", "model: ./models/nothing"), 2,
         ["suite.yaml: model: directory './models/nothing' not found (relative paths are looked up beside the suite",
          "give a model directory, builtin:smollm2-135m-instruct or an HF model id"]),
    Case("model-builtin-unknown", edited("model: model", "model: builtin:smollm3"), 2,
         ["model: unknown built-in model 'smollm3' (did you mean smollm2-135m-instruct?); known: "
          "builtin:smollm2-135m-instruct"]),
    Case("model-dir-without-config", lambda d: (write_suite(d), (d / "model" / "config.json").unlink())[0], 2,
         ["model: ", "/model: no config.json, not a transformers model directory; give a transformers model directory"]),
    Case("model-dir-without-weights", lambda d: (write_suite(d), (d / "model" / "model.safetensors").unlink())[0], 2,
         ["/model: no weights (*.safetensors); save the model with save_pretrained(safe_serialization=True)"]),
    Case("general-set-missing", appended("general: gen.yaml\n"), 2,
         ["suite.yaml: general.set: file 'gen.yaml' not found (relative to the suite file); fix the path"]),
    Case("general-set-bad-yaml", general("tasks:\n  a: {kind: multiple_choice, data: mc.jsonl\n"), 2,
         ["gen.yaml: line 3, column 1: invalid YAML: expected ',' or '}'", "check the brackets"]),
    Case("general-set-unknown-key-and-kind", general(
        "tasks:\n  a: {kind: multiple_choice, data: mc.jsonl, colour: 1}\n  b: {kind: mc, data: mc.jsonl}\n",
        {"mc.jsonl": ""}), 2,
         ["gen.yaml: tasks.a.colour: unknown key; remove it or check its spelling (keys here: kind, data,",
          "gen.yaml: tasks.b.kind: Input should be 'multiple_choice', 'short_answer', 'perplexity' or 'lm_eval' "
          "(got 'mc'); use one of those values"], lines=2),
    Case("general-set-data-missing", general("tasks:\n  a: {kind: perplexity, data: text.jsonl}\n"), 2,
         ["gen.yaml: tasks.a.data: file 'text.jsonl' not found (paths are relative to the general set file)"]),
    Case("general-set-alias-bomb", general(
        "x: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        + "".join(f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 8))
        + "tasks:\n  a: {kind: perplexity, data: *a7}\n"), 2,
         ["gen.yaml: line", "invalid YAML: aliases expand this to more than 1,000,000 values"]),

    # -- refused artifacts: exit 4 --------------------------------------------------------------------
    Case("model-remote-code", model_dir({"model_type": "custom", "auto_map": {
        "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}}, extra={"modeling_custom.py": "raise SystemExit"}),
         4, ["suite.yaml: model: ", "/other: needs its own Python code to load (config.json auto_map -> "
             "modeling_custom.CustomForCausalLM)", "set trust_remote_code: true in the suite (it runs with your "
             "permissions)"]),
    Case("model-remote-code-tokenizer", model_dir(extra={"tokenizer_config.json": json.dumps(
        {"auto_map": {"AutoTokenizer": ["tok.MyTokenizer", None]}})}), 4,
         ["needs its own Python code to load (tokenizer_config.json auto_map -> tok.MyTokenizer"]),
    Case("model-pickle-weights", model_dir(weights="pytorch_model.bin"), 4,
         ["suite.yaml: model: ", "/other: only pickle weights (pytorch_model.bin); convert them to safetensors; "
          "pickle files can execute code when loaded"]),
    Case("model-unknown-architecture", model_dir({"model_type": "weirdformer"}), 4,
         ["/other: architecture 'weirdformer' is not built into transformers", "custom model code is never run"],
         commands=COMPARE),

    # -- data: exit 3 from compare, before anything is written ----------------------------------------
    Case("empty-split", with_file("data/train.jsonl", ""), 3,
         ["data/train.jsonl: the train split is empty; add examples or point data.train at another file"], COMPARE),
    Case("wrong-column-names", with_file("data/train.jsonl", json.dumps({"review": "x", "label": "positive"}) + "\n"),
         3, ["data/train.jsonl: column(s) text used by the task templates are missing; available: review, label; "
             "rename the columns or change task.prompt / task.target"], COMPARE),
    Case("column-missing-in-a-later-row", with_file("data/train.jsonl", json.dumps(ROWS[0]) + "\n\n"
                                                    + json.dumps({"label": "positive"}) + "\n"), 3,
         ["data/train.jsonl: 1 row(s) lack columns the task templates use: row 2 (line 3): no text; "
          "fill those columns in every row"], COMPARE),
    Case("labels-outside-the-label-set", with_file("data/test.jsonl", "".join(json.dumps(r) + "\n" for r in [
        ROWS[0], {**ROWS[1], "label": "Positive"}, {**ROWS[2], "label": "meh"}] + [{**ROWS[3], "label": "x"}] * 6)), 3,
         ["data/test.jsonl: 8 target(s) outside task.labels ['negative', 'positive']: row 2: 'Positive' (did you "
          "mean positive?); row 3: 'meh'; row 4: 'x'; row 5: 'x'; row 6: 'x'; fix the rows or add the label"], COMPARE),
    Case("malformed-jsonl-line", with_file("data/train.jsonl", json.dumps(ROWS[0]) + '\n{"text": oops}\n'), 3,
         ["data/train.jsonl:2: malformed JSON (Expecting value at column 10); each line must be one JSON object"],
         COMPARE),
    Case("jsonl-line-not-an-object", with_file("data/train.jsonl", json.dumps(ROWS[0]) + "\n[1, 2]\n"), 3,
         ["data/train.jsonl:2: expected a JSON object, got list; write one object per line"], COMPARE),
    Case("ragged-csv-row", lambda d: with_file("data/train.csv", "text,label\nfine,positive\ntoo,many,fields\n",
                                               then=edited("train: data/train.jsonl", "train: data/train.csv"))(d), 3,
         ["data/train.csv:3: 3 fields, the header has 2; quote fields that contain commas"], COMPARE),
    Case("csv-unclosed-quote", lambda d: with_file("data/train.csv", 'text,label\n"open,positive\nx,negative\n',
                                                   then=edited("train: data/train.jsonl", "train: data/train.csv"))(d),
         3, ["data/train.csv:3: malformed CSV: unexpected end of data (the row starting on line 2); check the quotes"],
         COMPARE),
    Case("oversized-jsonl-line", with_file("data/train.jsonl", json.dumps(ROWS[0]) + "\n" + json.dumps(
        {"text": "x" * (1 << 20), "label": "positive"}) + "\n"), 3,
         ["data/train.jsonl:2: line longer than 1,048,576 bytes; shorten or split that text (or raise "
          "HARNESS_MAX_LINE_BYTES)"], COMPARE),
    Case("oversized-line-with-a-lower-limit", with_file("data/test.jsonl", json.dumps(
        {"text": "y" * 5000, "label": "positive"}) + "\n"), 3,
         ["data/test.jsonl:1: line longer than 2,048 bytes"], COMPARE, env={"HARNESS_MAX_LINE_BYTES": "2048"}),
    Case("non-utf8-data", with_file("data/train.jsonl", json.dumps(ROWS[0]).encode() + b'\n{"text": "caf\xe9", '
                                    b'"label": "positive"}\n'), 3,
         ["data/train.jsonl:2: byte 14 of the line (0xe9) is not UTF-8; re-save the file as UTF-8"], COMPARE),
    Case("few-shot-k-larger-than-train", edited("few-shot: {type: prompt, shots: 2}",
                                                "few-shot: {type: prompt, shots: 50}"), 3,
         ["suite.yaml: backends.few-shot.shots: 50 exemplars but the train split (", "data/train.jsonl) has 8 "
          "examples; lower shots to at most 8 or add training examples"], COMPARE),
    Case("repeated-ids", with_file("data/test.jsonl", json.dumps(ROWS[0]) + "\n" + json.dumps(
        {**ROWS[1], "id": "r0"}) + "\n"), 3,
         ["data/test.jsonl: 1 repeated id(s): 'r0' (row 1 and row 2); give every row its own id"], COMPARE),
    Case("corrupt-parquet", lambda d: with_file("data/test.parquet", b"PAR1 not really",
                                                then=edited("test: data/test.jsonl", "test: data/test.parquet"))(d),
         3, ["data/test.parquet: not a readable Parquet file (", "re-export it, or use .jsonl or .csv"], COMPARE),
    Case("unsupported-data-file", lambda d: with_file("data/test.json", "[]",
                                                      then=edited("test: data/test.jsonl", "test: data/test.json"))(d),
         2, ["suite.yaml: data.test: unsupported file type '.json'; use .jsonl, .csv, .parquet or hf:NAME"]),
    Case("general-malformed-jsonl", general("tasks:\n  t: {kind: perplexity, data: text.jsonl}\n",
                                            {"text.jsonl": '{"text": "fine"}\n{oops\n'}), 3,
         ["text.jsonl:2: malformed JSON (Expecting property name enclosed in double quotes at column 2); "
          "each line must be one JSON object"], COMPARE),
    Case("general-bad-answer", general("tasks:\n  mc: {kind: multiple_choice, data: mc.jsonl}\n", {"mc.jsonl": "".join(
        json.dumps(r) + "\n" for r in [{"question": "q", "choices": ["a", "b"], "answer": 1},
                                       {"question": "q", "choices": ["a", "b"], "answer": "x"},
                                       {"question": "q", "choices": "ab", "answer": 0},
                                       {"question": "q", "choices": ["a", "b"]}])}), 3,
         ["mc.jsonl:2: answer 'x' is not an index into choices (0 to 1); write the index of the right choice",
          "mc.jsonl:3: choices is 'ab'; write a list of at least 2 strings",
          "mc.jsonl:4: missing field(s) answer for a multiple_choice item; add them"], COMPARE,
         lines=3),
    Case("general-non-utf8", general("tasks:\n  t: {kind: perplexity, data: text.jsonl}\n",
                                     {"text.jsonl": b'{"text": "caf\xe9"}\n'}), 3,
         ["text.jsonl:1: byte 14 of the line (0xe9) is not UTF-8; re-save the file as UTF-8"], COMPARE),
    Case("general-empty-task", general("tasks:\n  sa: {kind: short_answer, data: sa.jsonl, shots: 3}\n",
                                       {"sa.jsonl": '{"question": "q", "answer": "a"}\n'}), 3,
         ["sa.jsonl: 1 items; the short_answer task 'sa' needs more than shots (3); add items, or lower shots"],
         COMPARE),
    Case("general-oversized-line", general("tasks:\n  t: {kind: perplexity, data: text.jsonl}\n",
                                           {"text.jsonl": json.dumps({"text": "z" * 4000}) + "\n"}), 3,
         ["text.jsonl:1: line longer than 2,048 bytes"], COMPARE, env={"HARNESS_MAX_LINE_BYTES": "2048"}),
]


def run(args: list[str]):
    result = CliRunner().invoke(main, args)
    return result, result.stdout, result.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_per_problem_with_its_exit_code(case: Case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                  # a default runs/ would land here
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    suite_dir = tmp_path / "s"
    suite_dir.mkdir()
    suite = case.build(suite_dir)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for command in case.commands:
        out = tmp_path / f"run-{command}"
        args = [command, str(suite)] + (["--out", str(out)] if command == "compare" else [])
        start = time.perf_counter()
        result, stdout, stderr = run(args)
        seconds = time.perf_counter() - start
        where = f"{command}: exit {result.exit_code}\nstderr:\n{stderr}\nstdout:\n{stdout}"
        assert result.exit_code == case.code, where
        assert isinstance(result.exception, SystemExit), (where, result.exception)   # no other exception escaped
        assert "Traceback" not in stdout + stderr, where
        lines = stderr.splitlines()
        assert len(lines) == case.lines and all(line.startswith("error: ") for line in lines), where
        for expected in case.expected:
            assert expected in stderr, (expected, where)
        assert all("; " in line for line in lines), where             # each problem says what to do
        assert stdout == "", where
        assert not out.exists() and not (tmp_path / "runs").exists(), where   # nothing half-written
        assert seconds < 30, (command, seconds)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before   # nor anything else


def test_debug_shows_the_traceback(tmp_path):
    suite = appended("colour: blue\n")(tmp_path)
    result = CliRunner().invoke(main, ["--debug", "validate", str(suite)])
    assert isinstance(result.exception, SuiteError) and "colour: unknown key" in str(result.exception)


def test_alias_bomb_and_deep_nesting_are_refused_quickly(tmp_path):
    """A billion-laughs suite expands to 10^9 strings: refused from the node graph, not expanded."""
    for build in (billion_laughs, appended("x: " + "[" * 100_000 + "]" * 100_000 + "\n")):
        d = tmp_path / str(id(build))
        d.mkdir()
        suite = build(d)
        start = time.perf_counter()
        result = CliRunner().invoke(main, ["validate", str(suite)])
        assert result.exit_code == 2 and time.perf_counter() - start < 5, result.output


# -- what is accepted ------------------------------------------------------------------------------------

def _numeric_fields(model) -> dict[str, tuple[type, list]]:
    """Numeric fields of a pydantic model: name -> (int or float, its bounds' metadata)."""
    import typing

    out = {}
    for name, info in model.model_fields.items():
        kinds = {a for a in (typing.get_args(info.annotation) or (info.annotation,)) if a in (int, float)}
        if kinds and info.annotation is not bool:
            out[name] = (int if kinds == {int} else float, info.metadata)
    return out


def _exponent_value(kind: type, metadata: list) -> tuple[str, float]:
    """A value inside the field's bounds, written the way PyYAML 1.1 would read as a string."""
    candidates = [("1e1", 10), ("1e3", 1000), ("2e2", 200)] if kind is int else \
                 [("9.5e-1", 0.95), ("5e-1", 0.5), ("1e-3", 0.001), ("1e1", 10.0)]
    for text, value in candidates:
        ok = True
        for bound in metadata:
            for attr, check in (("gt", lambda v, b: v > b), ("ge", lambda v, b: v >= b),
                                ("lt", lambda v, b: v < b), ("le", lambda v, b: v <= b)):
                if getattr(bound, attr, None) is not None and not check(value, getattr(bound, attr)):
                    ok = False
        if ok:
            return text, value
    raise AssertionError(f"no candidate fits {metadata}")


def test_every_numeric_field_accepts_exponent_notation(tmp_path):
    """`1e-4` and `1e3` are numbers in every numeric field of the suite and of every backend's Options
    (PyYAML reads them as strings; the suite loader reads them as YAML 1.2 does), and integer fields
    take `1e3` as 1000 - through the suite loader, and stored as the numbers they are."""
    from harness import registry
    from harness.suite import DecisionSpec, EvalSpec, GeneralSpec, StatsSpec, TaskSpec, load_suite

    sections, expected = {}, {}
    for section, model in (("task", TaskSpec), ("eval", EvalSpec), ("general", GeneralSpec),
                           ("decision", DecisionSpec), ("stats", StatsSpec)):
        for name, (kind, metadata) in _numeric_fields(model).items():
            text, value = _exponent_value(kind, metadata)
            sections.setdefault(section, {})[name] = text
            expected[(section, name)] = (kind, value)
    arms = {}
    for type_name in registry.names():
        options = registry.get(type_name).Options
        arms[f"x-{type_name}"] = {"type": type_name}
        for name, (kind, metadata) in _numeric_fields(options).items():
            text, value = _exponent_value(kind, metadata)
            arms[f"x-{type_name}"][name] = text
            expected[(f"x-{type_name}", name)] = (kind, value)
    suite = write_suite(tmp_path)
    text = suite.read_text().split("backends:")[0].replace("task:\n", "task:\n  " + ", ".join(
        f"{k}: {v}" for k, v in sections.pop("task").items()).replace(", ", "\n  ") + "\n")
    text += "".join(f"{s}: {{{', '.join(f'{k}: {v}' for k, v in fields.items())}}}\n" for s, fields in sections.items())
    text += "seed: 1e1\nbackends:\n" + "".join(
        f"  {arm}: {{{', '.join(f'{k}: {v}' for k, v in opts.items())}}}\n" for arm, opts in arms.items())
    suite.write_text(text.replace("general: {", "general: {set: null, "))
    loaded = load_suite(suite)        # what validate and compare read (validate also reads the data)
    assert loaded.seed == 10
    for (where, name), (kind, value) in expected.items():
        got = (loaded.backends[where].options[name] if where.startswith("x-")
               else getattr(getattr(loaded, where), name))
        assert got == pytest.approx(value) and type(got) is kind, (where, name, got)
        if where.startswith("x-"):      # the backend itself reads the same number
            parsed = registry.get(loaded.backends[where].type).Options(**loaded.backends[where].options)
            assert getattr(parsed, name) == pytest.approx(value)


def test_yes_no_labels_and_numeric_labels_are_text(tmp_path):
    """Only true/false are booleans (YAML 1.1 also reads yes/no/on/off as booleans); numbers as labels
    are the labels "0" and "1"; a time-like 10:30 stays text (YAML 1.1 reads 630)."""
    from harness.data import load_data
    from harness.suite import load_suite

    suite = write_suite(tmp_path)
    suite.write_text(suite.read_text().replace("labels: [negative, positive]", "labels: [no, yes]\n  stop: [10:30]"))
    yes_no = [{**r, "label": "yes" if r["label"] == "positive" else "no"} for r in ROWS]
    write_jsonl(tmp_path / "data" / "train.jsonl", yes_no[:8])
    write_jsonl(tmp_path / "data" / "test.jsonl", yes_no[8:])
    loaded = load_suite(suite)
    assert loaded.task.labels == ["no", "yes"] and loaded.task.stop == ["10:30"]
    assert {e.label for e in load_data(loaded).test} == {"yes", "no"}
    suite.write_text(suite.read_text().replace("labels: [no, yes]", "labels: [0, 1]"))
    numeric = [{**r, "label": int(r["label"] == "positive")} for r in ROWS]
    write_jsonl(tmp_path / "data" / "train.jsonl", numeric[:8])
    write_jsonl(tmp_path / "data" / "test.jsonl", numeric[8:])
    loaded = load_suite(suite)
    assert loaded.task.labels == ["0", "1"] and {e.label for e in load_data(loaded).test} == {"0", "1"}


def test_pickle_beside_safetensors_is_accepted_and_never_loaded(tmp_path):
    """transformers is told use_safetensors=True, so a stray .bin beside the safetensors is ignored."""
    suite = model_dir(weights="model.safetensors", extra={"pytorch_model.bin": "not loaded"})(tmp_path)
    result = CliRunner().invoke(main, ["validate", str(suite)])
    assert result.exit_code == 0, result.output


def test_trusted_remote_code_passes_the_checks(tmp_path):
    """`trust_remote_code: true` lets a model with its own code through the pre-load checks, and the
    resolved ModelSpec carries the trust to transformers (harness.models.load)."""
    from harness import models
    from harness.suite import load_suite

    build = model_dir({"model_type": "custom", "auto_map": {"AutoModelForCausalLM": "m.M"}})
    suite = build(tmp_path)
    suite.write_text(suite.read_text() + "trust_remote_code: true\n")
    loaded = load_suite(suite)
    assert loaded.trust_remote_code is True
    spec = models.resolve(loaded.model, loaded.base_dir, trust_remote_code=loaded.trust_remote_code)
    assert spec.trust_remote_code is True and spec.path == str((tmp_path / "other").resolve())
    with pytest.raises(models.RefusedArtifact, match="needs its own Python code"):
        models.resolve(loaded.model, loaded.base_dir)


def test_general_set_loader_reports_every_problem(tmp_path):
    """load_general_set (also used outside suites) raises the same one-line problems."""
    from harness.general import load_general_set

    (tmp_path / "gen.yaml").write_text("tasks:\n  a: {kind: mc, data: x.jsonl}\n  b: {kind: perplexity}\n")
    with pytest.raises(SuiteError) as err:
        load_general_set(tmp_path / "gen.yaml")
    assert err.value.exit_code == 2 and len(err.value.problems) == 2
    assert err.value.problems[0].startswith("tasks.a.kind: Input should be 'multiple_choice'")
    assert err.value.problems[1].startswith("tasks.b.data: Field required; add it (JSONL file")
