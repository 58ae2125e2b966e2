"""report.html: one self-contained, offline file rendered from results.json and the run's samples.

Jinja2 with autoescape on renders templates/report.html.j2; every text from the data or a model
is escaped there, after secrets are redacted (_finalize). Only the SVG strings built by reports.charts (which escape their own text) are
inserted as markup. No number is computed here: values, intervals, differences and p-values are
read from results; this module only picks, orders and formats them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from harness.errors import printable, redactor
from harness.results import ArmResult, Results
from reports import _format as fmt
from reports import charts

TEMPLATES = Path(__file__).parent / "templates"
VERDICT_CLASS = {"GO": "go", "NO-GO": "nogo", "INCONCLUSIVE": "inconclusive"}


_redact = redactor()     # replaced at each render_html, so the environment's secrets are current


def _finalize(value):
    """Every {{ }} value: secrets redacted and control characters (terminal escapes, bidi overrides)
    shown as escapes; then Jinja autoescapes it (Markup, the charts, stays markup)."""
    if isinstance(value, Markup):
        return Markup(printable(_redact(str(value))))
    return printable(_redact(value)) if isinstance(value, str) else value


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True, finalize=_finalize)


def _tone(results: Results, c) -> str:
    better = fmt.improves(results, c)
    return "neutral" if better is None else ("better" if better else "worse")


def _delta(results: Results, c) -> dict | None:
    if c is None:
        return None
    return {"diff": fmt.num(c.difference, signed=True), "ci": fmt.interval(c.ci_low, c.ci_high, signed=True),
            "p": fmt.p_value(c.p_value), "test": fmt.test_name(c.test), "n": c.n, "tone": _tone(results, c),
            "better": c.better, "worse": c.worse}


def _value(m) -> dict | None:
    if m is None:
        return None
    return {"value": fmt.num(m.value), "ci": fmt.interval(m.ci_low, m.ci_high), "n": m.n}


def _main_rows(results: Results) -> list[dict]:
    ref = results.best_prompt_arm
    rows = []
    for name, arm in results.arms.items():
        cells = []
        for m in results.metrics:
            cells.append({"metric": m, "v": _value(arm.metrics.get(m)), "best": name in fmt.best_arms(results, m),
                          "reference": name == ref, "delta": _delta(results, fmt.comparison(arm, m, ref))})
        rows.append({"name": name, "backend": arm.backend, "ok": arm.status == "ok", "cells": cells,
                     "prompt": arm.backend == "prompt"})
    return rows


def _forgetting(results: Results) -> dict | None:
    names = fmt.general_metrics(results)
    if not names:
        return None
    base = results.general.base if results.general else {}
    rows = [{"name": "base model", "base": True, "summary": "reference", "summary_tone": "",
             "cells": [{"v": _value(base.get(m)), "delta": None} for m in names]}]
    for name, arm in fmt.ok_arms(results).items():
        if not arm.general and not arm.forgetting:
            continue
        rows.append({"name": name, "base": False, "summary": fmt.forgetting_summary(arm),
                     "summary_tone": "worse" if arm.forgetting_summary and arm.forgetting_summary.metric else "",
                     "cells": [{"v": _value(arm.general.get(m)),
                                "delta": _delta(results, fmt.comparison(arm, m, "base", forgetting=True))}
                               for m in names]})
    heads = [{"name": m, "arrow": "↑" if fmt.higher_is_better(results, m) else "↓"} for m in names]
    return {"metrics": heads, "rows": rows}


def _costs(results: Results, front: set[str]) -> list[dict]:
    rows = []
    for name, arm in results.arms.items():
        c = arm.cost
        rows.append({"name": name, "backend": arm.backend, "front": name in front, "cost": c is not None,
                     "train": fmt.seconds(c.train_seconds) if c else "", "cpu": fmt.cpu_seconds(c) if c else "",
                     "steps": f"{c.train_steps:,}" if c else "",
                     "tokens": fmt.count(c.train_tokens) if c else "",
                     "target_tokens": fmt.count(c.train_target_tokens) if c else "",
                     "memory": fmt.size(c.peak_memory_bytes) if c else "",
                     "params": f"{fmt.count(c.trainable_params)} / {fmt.count(c.total_params)}" if c else "",
                     "artifact": fmt.size(c.artifact_bytes) if c else "",
                     "eval": fmt.seconds(c.eval_seconds) if c else "",
                     "eval_tokens": fmt.count(c.eval_tokens) if c else ""})
    return rows


def _charts(results: Results, colors: dict[str, str], primary: str | None, front: set[str], by_cpu: bool) -> dict:
    ok = fmt.ok_arms(results)
    metric_charts = []
    for m in results.metrics:
        best = fmt.best_arms(results, m)
        rows = [{"name": k, "value": a.metrics[m].value, "low": a.metrics[m].ci_low, "high": a.metrics[m].ci_high,
                 "best": k in best} for k, a in ok.items() if m in a.metrics]
        arrow = "higher is better" if fmt.higher_is_better(results, m) else "lower is better"
        metric_charts.append(charts.bar_chart(m, rows, colors, f"{arrow}; whiskers: confidence interval"))
    forgetting_charts = []
    for m in fmt.general_metrics(results):
        rows = []
        for k, a in ok.items():
            c = fmt.comparison(a, m, "base", forgetting=True)
            if c is not None:
                rows.append({"name": k, "value": c.difference, "low": c.ci_low, "high": c.ci_high})
        higher = fmt.higher_is_better(results, m)
        caption = "difference vs base model; shaded side is worse"
        forgetting_charts.append(charts.bar_chart(m, rows, colors, caption, zero_line=True,
                                                  worse_side="negative" if higher else "positive"))
    points = [{"name": k, "value": a.metrics[primary].value, "cost": fmt.training_seconds(a.cost, by_cpu),
               "front": k in front} for k, a in ok.items() if primary in a.metrics and a.cost is not None]
    scatter = charts.scatter_chart(points, primary, fmt.higher_is_better(results, primary), colors,
                                   fmt.training_cost_name(by_cpu)) if primary else None
    loss = charts.loss_chart({k: a.loss_curve for k, a in ok.items()}, colors)
    safe = lambda svgs: [Markup(s) for s in svgs if s]  # noqa: E731  (SVG built and escaped by charts)
    return {"metrics": safe(metric_charts), "forgetting": safe(forgetting_charts),
            "scatter": Markup(scatter) if scatter else None, "loss": Markup(loss) if loss else None}


def _read_samples(run_dir: Path, rel: str | None) -> tuple[dict[str, dict] | None, str | None]:
    if not rel:
        return None, "no samples file recorded"
    path = run_dir / rel
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        return None, f"samples file {rel} not found"
    except (OSError, ValueError) as exc:
        return None, f"samples file {rel} unreadable ({exc.__class__.__name__})"
    return {str(r.get("id")): r for r in rows if isinstance(r, dict)}, None


def _examples(results: Results, run_dir: Path) -> dict:
    cache: dict[str, tuple] = {}

    def samples(arm: ArmResult | None):
        rel = arm.samples if arm else None
        if rel not in cache:
            cache[rel] = _read_samples(run_dir, rel)
        return cache[rel]

    items, notes, arms = [], [], []
    for name, arm in results.arms.items():
        ch = arm.changes
        if ch is None:
            continue
        arms.append({"name": name, "against": ch.against, "metric": ch.metric,
                     "fixed": len(ch.fixed), "broke": len(ch.broke)})
        mine, mine_note = samples(arm)
        theirs, their_note = samples(results.arms.get(ch.against))
        for who, note in ((name, mine_note), (ch.against, their_note)):
            if note:
                notes.append(f"{name} vs {ch.against}: {who}: {note}")
        for kind, ids in (("fixed", ch.fixed), ("broke", ch.broke)):
            for ex_id in map(str, ids):
                here, there = (mine or {}).get(ex_id), (theirs or {}).get(ex_id)
                row = here or there or {}
                items.append({"arm": name, "against": ch.against, "kind": kind, "id": ex_id, "metric": ch.metric,
                              "found": bool(row), "prompt": str(row.get("prompt", "")),
                              "target": str(row.get("target", "")),
                              "prediction": str(here["prediction"]) if here and "prediction" in here else fmt.DASH,
                              "other": str(there["prediction"]) if there and "prediction" in there else fmt.DASH})
    return {"arms": arms, "rows": items, "notes": list(dict.fromkeys(notes))}


def _fingerprints(results: Results) -> list[dict]:
    """Rows of (what, details, sha256) for the suite, data files, model and general tasks."""
    s = results.suite
    rows = [{"what": "suite", "detail": f"{s.get('name')} · {s.get('path')}", "sha": s.get("sha256")}]
    rows += [{"what": f"data: {split}", "detail": f"{d.source} · {d.examples:,} examples",
              "sha": d.sha256 or "– (hub dataset)"} for split, d in results.data.items()]
    rows.append({"what": "model", "detail": " · ".join(str(v) for v in results.model.values()), "sha": None})
    if results.general:
        rows += [{"what": f"general: {k}", "detail": f"{t.kind} · {t.source} · {t.examples:,} items", "sha": t.sha256}
                 for k, t in results.general.tasks.items()]
    return rows


def render_html(results: Results, run_dir: Path) -> str:
    global _redact
    _redact = redactor()
    primary = fmt.primary_metric(results)
    front = fmt.pareto_front(results, primary)
    by_cpu = fmt.cost_by_cpu(results)     # the seconds the front weighs, named in the chart and text
    colors = charts.arm_colors(list(results.arms))
    d = results.decision
    decision = None if d is None else {
        "verdict": d.verdict, "cls": VERDICT_CLASS.get(d.verdict, "none"), "headline": fmt.VERDICT_TEXT[d.verdict],
        "arm": d.arm, "prompt_arm": d.prompt_arm, "reasons": d.reasons, "needed": d.needed_test_examples,
        "policy": fmt.flatten("", d.policy)}
    env = dict(results.environment)
    versions = env.pop("versions", {}) or {}
    return _env().get_template("report.html.j2").render(
        r=results, decision=decision, n=fmt.n_test(results), primary=primary, colors=colors,
        cost_name=fmt.training_cost_name(by_cpu),
        metrics=[{"name": m, "arrow": "↑" if fmt.higher_is_better(results, m) else "↓",
                  "variant": info.get("variant", "")} for m, info in results.metrics.items()],
        main_rows=_main_rows(results), forgetting=_forgetting(results), costs=_costs(results, front),
        charts=_charts(results, colors, primary, front, by_cpu), examples=_examples(results, Path(run_dir)),
        failed=fmt.failed_arms(results), fingerprints=_fingerprints(results), stats=fmt.flatten("", results.stats),
        environment=fmt.flatten("", env), versions=versions,
        options={k: json.dumps(a.options, sort_keys=True) for k, a in results.arms.items()})
