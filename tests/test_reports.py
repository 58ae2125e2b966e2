"""report.md and report.html rendered from a realistic results object (tests/report_fixture.py):
content, escaping of data and model text, self-containment, and the degenerate cases."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.results import ArmResult, Cost, MetricValue, Results
from reports import _format as fmt
from reports import write_reports
from reports.html import render_html
from reports.markdown import metric_table, render_markdown

from .report_fixture import BOLD, IMG, SCRIPT, build_results

SCORES_ARMS = ["zero-shot", "few-shot", "full", "lora", "qlora"]
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


@pytest.fixture
def run(tmp_path):
    return build_results(tmp_path), tmp_path


def _row(lines: list[str], arm: str) -> str:
    return next(line for line in lines if line.startswith(f"| {arm} |"))


def _html_rows(html: str, table_class: str) -> dict[str, str]:
    """The <tr> rows of one table, by the arm name in bold in their first cell."""
    table = re.search(rf'<table class="{table_class}">(.*?)</table>', html, re.S).group(1)
    rows = {}
    for tr in re.findall(r"<tr>(.*?)</tr>", table, re.S):
        name = re.search(r"<b>(.*?)</b>", tr)
        if name:
            rows[name.group(1)] = tr
    return rows


# -- Markdown --------------------------------------------------------------------------------------

def test_markdown_has_verdict_reasons_intervals_and_deltas(run):
    results, _ = run
    md = render_markdown(results)
    assert "**GO: fine-tune** · fine-tuned arm **lora** · prompt-only arm **few-shot**" in md
    assert "lora beats few-shot on accuracy by +0.090 [+0.050, +0.130]" in md
    assert "Policy: metric accuracy, min_gain 0.02" in md
    lines = md.splitlines()
    assert _row(lines, "lora").startswith("| lora | lora | 0.890 [0.828, 0.952] |")
    assert "**0.905** [0.843, 0.967]" in _row(lines, "full")                   # best marked, with interval
    assert "**1.380** [1.270, 1.490]" in _row(lines, "full")                   # lower-is-better best
    assert "### Difference vs the best prompt-only arm (few-shot)" in md
    assert "| lora | +0.090 [+0.050, +0.131] p<0.001 |" in md
    assert "fixed 42 examples, broke 12" in md
    assert "| too-many-shots | prompt | failed | failed | failed | failed |" in md


def test_markdown_forgetting_pareto_cost_failed_and_environment(run):
    results, _ = run
    md = render_markdown(results)
    lines = md.splitlines()
    assert "## Forgetting: general abilities vs the base model" in md
    assert _row(lines, "base model").startswith("| base model | 0.312 [0.284, 0.340] | 18.700 [17.800, 19.600] ")
    full = next(line for line in lines if line.startswith("| full | 0.271"))
    assert "(Δ −0.041 [−0.061, −0.021] p=0.003)" in full
    assert "mmlu-mini/accuracy worse by 0.041 (p=0.003)" in full
    pareto = md[md.index("## Quality vs cost"):md.index("## Cost ledger")].splitlines()
    front = {arm for arm in SCORES_ARMS if "◆ Pareto front" in _row(pareto, arm)}
    assert front == {"few-shot", "lora", "full"}
    ledger = md[md.index("## Cost ledger"):].splitlines()
    assert _row(ledger, "lora") == ("| lora | 10 min 12 s | 19 min 24 s | 120 | 1.5 M | 128.0 k | 2.7 GiB | "
                                    "1.8 M / 134.5 M | 7.0 MiB | 16.4 s | 41.9 k |")
    assert _row(ledger, "zero-shot").startswith("| zero-shot | 0 s | – | ")    # prompt arm: no CPU time
    assert "- **too-many-shots** (prompt, exit code 2): shots=50 but the train split has only 8 examples" in md
    assert results.suite["sha256"] in md and results.data["test"].sha256 in md
    assert "device: NVIDIA H100 80GB HBM3" in md and "transformers 5.2.0" in md
    assert "methods.binary mcnemar-exact" in md


def test_markdown_escapes_data_text(run):
    results, _ = run
    md = render_markdown(results)
    assert "<script" not in md and "<b>" not in md
    assert "&lt;script&gt;window.\\_\\_pwned=1&lt;/script&gt;" in md and "&lt;b&gt;x&lt;/b&gt;" in md


def test_metric_table_for_the_cli_includes_intervals(run):
    results, _ = run
    table = metric_table(results)
    assert table[0] == "| arm | backend | accuracy ↑ | macro_f1 ↑ | exact_match ↑ | perplexity ↓ |"
    assert _row(table, "qlora") == ("| qlora | qlora | 0.875 [0.813, 0.937] | 0.873 [0.811, 0.935] | "
                                    "0.860 [0.798, 0.922] | 1.620 [1.490, 1.750] |")


# -- HTML ------------------------------------------------------------------------------------------

def test_html_has_verdict_tables_charts_and_examples(run):
    results, run_dir = run
    html = render_html(results, run_dir)
    assert '<div class="verdict go" id="verdict"' in html and "GO: fine-tune" in html
    assert "Fine-tuned arm: <b>lora</b>" in html and "Prompt-only arm: <b>few-shot</b>" in html
    assert "<li>lora beats few-shot on accuracy by +0.090 [+0.050, +0.130]" in html
    main = _html_rows(html, "main")
    assert '<span class="v">0.890</span> <span class="ci">[0.828, 0.952]</span> <span class="n">n=200</span>' \
        in main["lora"]
    assert "Δ +0.090 [+0.050, +0.131]" in main["lora"] and "p&lt;0.001 · McNemar exact" in main["lora"]
    assert "reference" in main["few-shot"] and "Δ" not in main["few-shot"]
    assert main["full"].count('class="num best"') == 4 and "best" not in main["lora"]
    assert "failed" in main["too-many-shots"]
    forgetting = _html_rows(html, "forgetting")
    assert set(forgetting) == {"base model", "full", "lora", "qlora"}
    assert "Δ −0.041 [−0.061, −0.021] · p=0.003" in forgetting["full"]
    assert "mmlu-mini/accuracy worse by 0.041 (p=0.003)" in forgetting["full"]
    assert "no significant drop" in forgetting["lora"]
    costs = _html_rows(html, "costs")
    assert {arm for arm, tr in costs.items() if "◆ Pareto" in tr} == {"few-shot", "lora", "full"}
    assert "10 min 12 s" in costs["lora"] and "513.2 MiB" in costs["full"]
    assert "19 min 24 s" in costs["lora"]     # training CPU time, what the cheapest-arm rule compares on a CPU
    charts = re.findall(r'<svg class="chart".*?</svg>', html, re.S)
    assert len(charts) == 4 + 1 + 1 + 2            # task metrics, scatter, loss, forgetting
    scatter = next(c for c in charts if "vs training time" in c)
    assert scatter.count('stroke="#1f2937" stroke-width="3"') == 3 and "lora 0.890 ◆" in scatter
    assert next(c for c in charts if "Training loss" in c).count('class="line"') == 3
    assert all(c.count('class="bar"') == 5 for c in charts[:4])
    examples = re.findall(r'<article class="ex" data-arm="([^"]+)" data-kind="(fixed|broke)">', html)
    expected = [(k, kind) for k, a in results.arms.items() if a.changes
                for kind in ("fixed", "broke") for _ in getattr(a.changes, kind)]
    assert examples == expected and len(examples) > 100
    assert 'id="ex-q"' in html and "addEventListener" in html
    assert "shots=50 but the train split has only 8 examples" in html and "exit code 2" in html
    assert results.data["train"].sha256 in html and "percentile bootstrap" in html and "2.13.0" in html


def test_html_escapes_model_output_and_data(run):
    results, run_dir = run
    results.arms = {("<i>q</i>" if k == "qlora" else k): a for k, a in results.arms.items()}   # in charts too
    html = render_html(results, run_dir)
    assert html.count("<script") == 1 and "<script>\n(function" in html          # only the filter script
    assert SCRIPT not in html and BOLD not in html and IMG not in html and "<i>q</i>" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "&lt;i&gt;q&lt;/i&gt;" in html
    assert "&lt;img src=&#34;x&#34; onerror=&#34;window.__pwned=2&#34;&gt;" in html
    tags = re.findall(r"<[a-zA-Z][^>]*>", html)
    assert not [t for t in tags if t.startswith(("<img", "<i>")) or re.search(r"\bon[a-z]+=", t)]


def test_html_is_self_contained(run):
    results, run_dir = run
    html = render_html(results, run_dir)
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in html
    tags = re.findall(r"<[a-zA-Z!/][^>]*>", html)     # escaped data text never contains a raw "<"
    assert len(tags) > 500
    for tag in tags:
        assert not re.search(r"https?:|//cdn|\bsrc\s*=|\bhref\s*=\s*\"(?!#)", tag, re.I), tag
        assert not re.match(r"<(link|img|iframe|object|embed|audio|video|source|base)\b", tag, re.I), tag
    for block in re.findall(r"<(style|script)\b[^>]*>(.*?)</\1>", html, re.S):
        assert not re.search(r"https?:|//|url\(|@import|fetch\(|XMLHttpRequest|import\(", block[1]), block[0]


def test_no_decision_and_no_general(tmp_path):
    results = build_results(tmp_path, decision=False)
    results.general = None
    for arm in results.arms.values():
        arm.general, arm.forgetting, arm.forgetting_summary = {}, [], None
    md, html = render_markdown(results), render_html(results, tmp_path)
    assert "No decision policy evaluated" in md and "No decision policy evaluated" in html
    assert '<div class="verdict none"' in html
    assert "Forgetting" not in md and 'id="forgetting"' not in html
    # without a decision the scatter uses the first metric
    assert fmt.primary_metric(results) == "accuracy" and "accuracy vs training time" in html


def test_missing_samples_file_is_a_note_not_a_crash(tmp_path):
    results = build_results(tmp_path)
    (tmp_path / "samples" / "lora.jsonl").unlink()
    html = render_html(results, tmp_path)
    assert "lora vs few-shot: lora: samples file samples/lora.jsonl not found" in html
    lora = re.findall(r'<article class="ex" data-arm="lora".*?</article>', html, re.S)
    assert len(lora) == 42 + 12 and "Is this review positive or negative?" in lora[0]   # few-shot's rows still shown
    results = build_results(tmp_path / "none", write_samples=False)
    html = render_html(results, tmp_path / "none")
    assert "samples file samples/few-shot.jsonl not found" in html and "not found in the samples" in html


def test_minimal_results_without_statistics_render(tmp_path):
    """What an older compare writes: no intervals, comparisons, general scores, changes or decision."""
    cost = Cost(train_seconds=0, train_tokens=0, train_target_tokens=0, train_steps=0, peak_memory_bytes=10,
                trainable_params=0, total_params=5, artifact_bytes=0, eval_seconds=1.0, eval_tokens=9)
    results = Results(harness_version="0.1.0", created="2025-01-01T00:00:00+00:00",
                      suite={"name": "tiny", "path": "s.yaml", "sha256": "ab", "seed": 1}, model={"ref": "m"},
                      data={}, metrics={"accuracy": {"higher_is_better": True, "variant": "v"}},
                      environment={"device": "cpu"},
                      arms={"zero-shot": ArmResult(backend="prompt", options={}, status="ok", cost=cost,
                                                   metrics={"accuracy": MetricValue(value=0.5, n=6)})})
    md, html = render_markdown(results), render_html(results, tmp_path)
    assert "| zero-shot | prompt | **0.500** |" in md and "No loss curves recorded." in html
    assert 'id="examples"' not in html and "<script" not in html


def test_reports_are_pure_views_of_results_json(run):
    results, run_dir = run
    again = Results.model_validate_json(results.model_dump_json())
    assert render_markdown(again) == render_markdown(results)
    assert render_html(again, run_dir) == render_html(results, run_dir)


def test_write_reports_writes_both_atomically(run):
    results, run_dir = run
    paths = write_reports(results, run_dir)
    assert [p.name for p in paths] == ["report.md", "report.html"]
    assert paths[0].read_text(encoding="utf-8") == render_markdown(results)
    assert paths[1].read_text(encoding="utf-8") == render_html(results, run_dir)
    assert not list(run_dir.glob(".report*"))


def test_pareto_front_rules(run):
    results, _ = run
    assert fmt.pareto_front(results, "accuracy") == {"few-shot", "lora", "full"}
    assert fmt.pareto_front(results, "perplexity") == {"few-shot", "lora", "full"}      # lower is better
    results.arms["qlora"].cost.train_seconds = results.arms["lora"].cost.train_seconds
    results.arms["qlora"].metrics["accuracy"].value = results.arms["lora"].metrics["accuracy"].value
    assert fmt.pareto_front(results, "accuracy") == {"few-shot", "lora", "qlora", "full"}  # exact ties both stay


def test_template_ships_with_the_package():
    root = Path(__file__).resolve().parents[1]
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    section = pyproject.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    patterns = re.search(r"^reports\s*=\s*\[(.*?)\]", section, re.M).group(1)
    assert any(Path("templates/report.html.j2").match(p.strip(' "')) for p in patterns.split(","))
    assert (root / "reports" / "templates" / "report.html.j2").is_file()


@pytest.mark.parametrize("verdict, css, headline", [("NO-GO", "nogo", "NO-GO: keep prompting"),
                                                    ("INCONCLUSIVE", "inconclusive", "INCONCLUSIVE")])
def test_other_verdicts(run, verdict, css, headline):
    results, run_dir = run
    results.decision.verdict, results.decision.arm, results.decision.needed_test_examples = verdict, None, 1400
    html, md = render_html(results, run_dir), render_markdown(results)
    assert f'<div class="verdict {css}" id="verdict"' in html and headline in html
    assert "About <b>1,400</b> test examples would settle it" in html
    assert f"**{headline}** · prompt-only arm **few-shot** · about 1,400 test examples would settle it" in md


def test_quality_vs_cost_counts_cpu_time_where_the_cheapest_arm_rule_does(run):
    """On a CPU-only run the cheapest-arm rule weighs training CPU time; the front and both reports'
    quality-vs-cost views weigh the same seconds (wall time where an accelerator did the work)."""
    results, run_dir = run
    results.arms["qlora"].cost.train_cpu_seconds = 900.0    # wall 798 s > lora's 613 s, CPU 900 s < lora's 1,165 s
    assert fmt.pareto_front(results, "accuracy") == {"few-shot", "lora", "full"}     # the fixture ran on a GPU
    results.environment["accelerator"] = "cpu"
    assert fmt.pareto_front(results, "accuracy") == {"few-shot", "qlora", "lora", "full"}
    md = render_markdown(results)
    pareto = md[md.index("## Quality vs cost"):md.index("## Cost ledger")].splitlines()
    assert "training CPU time" in pareto[2] and "15 min 00 s" in _row(pareto, "qlora")
    assert "◆ Pareto front" in _row(pareto, "qlora")
    html = render_html(results, run_dir)
    assert "training CPU time" in html and "training time (wall clock)" not in html
    results.arms["full"].cost.train_cpu_seconds = 0.0        # one trained arm without CPU time: wall time again
    assert fmt.pareto_front(results, "accuracy") == {"few-shot", "lora", "full"}
