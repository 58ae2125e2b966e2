"""Suite validation: every problem at once, with its place, before any model loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import SuiteError
from harness.suite import load_suite

from .conftest import make_suite

REPO = Path(__file__).resolve().parents[1]


def test_shipped_suite_is_valid():
    suite = load_suite(REPO / "suites" / "sentiment.yaml")
    assert list(suite.backends) == ["zero-shot", "few-shot", "full", "lora", "qlora"]
    assert suite.backends["full"].options["learning_rate"] == 2e-5


def test_paths_are_relative_to_the_suite_file(tmp_path, tiny_model_dir):
    path = make_suite(tmp_path / "s", tiny_model_dir)
    suite = load_suite(path)
    assert (suite.base_dir / suite.data.train).exists()


def test_three_mistakes_reported_together_with_places(tmp_path, tiny_model_dir):
    path = make_suite(tmp_path, tiny_model_dir, backends=(
        "  zero-shot: {type: prompt, shots: 0}\n"
        "  lora: {type: lora, r: 0}\n"
        "  q: {type: qlorra}\n"), extra="colour: blue\n")
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    problems = err.value.problems
    assert any(p.startswith("colour: unknown key") for p in problems), problems
    assert any(p.startswith("backends.lora.r:") and "greater than 0" in p and "got 0" in p for p in problems)
    assert any(p.startswith("backends.q.type:") and "did you mean qlora?" in p for p in problems)
    assert len(problems) == 3, problems


def test_unknown_option_and_metric_suggest_fixes(tmp_path, tiny_model_dir):
    path = make_suite(tmp_path, tiny_model_dir, backends="  lora: {type: lora, rank: 4}\n")
    text = path.read_text().replace("metrics: [accuracy,", "metrics: [acuracy,")
    path.write_text(text)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    joined = "\n".join(err.value.problems)
    assert "backends.lora.rank: unknown option for type lora" in joined
    assert "metrics.0: unknown metric 'acuracy' (did you mean accuracy?)" in joined


def test_numbers_written_like_1e_4_are_numbers(tmp_path, tiny_model_dir):
    path = make_suite(tmp_path, tiny_model_dir, backends="  lora: {type: lora, learning_rate: 1e-4}\n")
    suite = load_suite(path)
    from harness import registry

    options = registry.get("lora").Options(**suite.backends["lora"].options)
    assert options.learning_rate == pytest.approx(1e-4)


@pytest.mark.parametrize("text, expected", [
    ("name: a\nname: b\n", "duplicate key 'name'"),
    ("name: [unclosed\n", "line 2"),
    ("- just\n- a list\n", "must be a mapping"),
])
def test_malformed_yaml_names_the_problem(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert expected in str(err.value)


def test_missing_data_file_is_reported(tmp_path, tiny_model_dir):
    path = make_suite(tmp_path, tiny_model_dir)
    (tmp_path / "data" / "test.jsonl").unlink()
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert "data.test: file 'data/test.jsonl' not found" in str(err.value)


def test_cli_validate_exits_2_without_loading_a_model(tmp_path, tiny_model_dir):
    path = make_suite(tmp_path, tiny_model_dir, backends="  x: {type: lorra}\n", extra="oops: 1\n")
    # A fresh interpreter, so we can see what validate imported.
    code = ("import sys\nfrom click.testing import CliRunner\nfrom harness.cli import main\n"
            f"r = CliRunner().invoke(main, ['validate', {str(path)!r}])\n"
            "print(r.exit_code)\nprint(r.output)\n"
            "print('LOADED' if 'torch' in sys.modules or 'transformers' in sys.modules else 'LIGHT')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "2"
    assert "backends.x.type: unknown backend type 'lorra' (did you mean lora?)" in out
    assert "oops: unknown key" in out
    assert out.strip().endswith("LIGHT")


def test_cli_validate_ok(tmp_path, tiny_model_dir):
    result = CliRunner().invoke(main, ["validate", str(make_suite(tmp_path, tiny_model_dir))])
    assert result.exit_code == 0, result.output
    assert "ok (5 arms" in result.output


def test_arm_without_type_is_reported(tmp_path, tiny_model_dir):
    path = make_suite(tmp_path, tiny_model_dir, backends="  a: {shots: 2}\n")
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert any(p.startswith("backends.a.type: Field required") for p in err.value.problems)


def test_validate_cross_checks_the_regression_section(tmp_path, tiny_model_dir):
    from harness.errors import SuiteError
    from harness.suite import load_suite

    from .conftest import make_suite

    suite = make_suite(tmp_path / "s", tiny_model_dir, extra="regression: {metrics: [rougeL], general: [knowledge]}\n")
    with pytest.raises(SuiteError) as caught:
        load_suite(suite)
    text = "\n".join(caught.value.lines())
    assert "regression.metrics.0: 'rougeL' is not one of metrics" in text
    assert "regression.general: the suite has no general tasks" in text
