"""report.md: the same content as report.html (less the charts and the per-example view), from
results.json only. Text from the data or a model is escaped so that any Markdown viewer shows it
as the text it is: no raw HTML (viewers pass it through), no links or images, no emphasis, code
spans, math or block structure, no cell or line breaks; secrets are redacted."""

from __future__ import annotations

import re

from harness.errors import one_line, redactor
from harness.results import Results
from reports import _format as fmt

_MD_ESCAPES = str.maketrans({"\\": "\\\\", "`": "\\`", "*": "\\*", "~": "\\~", "|": "\\|", "$": "\\$",
                             "&": "&amp;", "<": "&lt;", ">": "&gt;"})
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")   # intraword _ never emphasises
_LINK_SYNTAX = re.compile(r"\](?=[(\[:])")                              # [text](url), [text][ref], [ref]: url
_BARE_LINK = re.compile(r"(?i)(?<=:)//|(?<=\bwww)\.")                    # GFM autolinks: https://x, www.x
_BLOCK_START = re.compile(r"^(?:[-+]|#{1,6}|\d{1,9}(?=[.)]))(?=[.)]?(?:\s|$)|-)")  # list, heading, rule at a line start


def md(text, redact=None) -> str:
    """Escape text from the data or a model for a Markdown table cell or line (see the module doc)."""
    s = one_line(" ".join((redact or redactor())(text).split()))
    s = _EDGE_UNDERSCORE.sub(r"\\_", s.translate(_MD_ESCAPES))
    s = _BARE_LINK.sub(lambda m: "\\/\\/" if m.group() == "//" else "\\.", _LINK_SYNTAX.sub("]\\\\", s))
    return _BLOCK_START.sub(lambda m: m.group() + "\\" if m.group().isdigit() else "\\" + m.group(), s)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _arrow(results: Results, metric: str) -> str:
    return "↑" if fmt.higher_is_better(results, metric) else "↓"


def metric_table(results: Results) -> list[str]:
    """Arms x task metrics: value [interval], best per metric in bold (printed by the CLI too)."""
    metrics = list(results.metrics)
    lines = [_row(["arm", "backend", *(f"{md(m)} {_arrow(results, m)}" for m in metrics)]),
             "|---|---|" + "---:|" * len(metrics)]
    best = {m: fmt.best_arms(results, m) for m in metrics}
    for name, arm in results.arms.items():
        if arm.status != "ok":
            lines.append(_row([md(name), md(arm.backend), *("failed" for _ in metrics)]))
            continue
        cells = []
        for m in metrics:
            value = arm.metrics.get(m)
            text = fmt.metric_cell(value)
            cells.append(f"**{fmt.num(value.value)}** {fmt.interval(value.ci_low, value.ci_high)}".rstrip()
                         if name in best[m] else text)
        lines.append(_row([md(name), md(arm.backend), *cells]))
    return lines


def delta_table(results: Results) -> list[str]:
    ref = results.best_prompt_arm
    if ref is None:
        return []
    rows = []
    for name, arm in fmt.ok_arms(results).items():
        found = [fmt.comparison(arm, m, ref) for m in results.metrics]
        if any(found):
            rows.append(_row([md(name), *(fmt.delta_cell(c) for c in found)]))
    if not rows:
        return []
    tests = sorted({fmt.test_name(c.test) for a in results.arms.values() for c in a.comparisons if c.against == ref})
    return [f"### Difference vs the best prompt-only arm ({md(ref)})", "",
            _row(["arm", *(f"{md(m)} {_arrow(results, m)}" for m in results.metrics)]),
            "|---|" + "---:|" * len(results.metrics), *rows, "",
            f"This arm minus {md(ref)}, with its confidence interval and the p-value of no difference "
            f"({md(', '.join(tests))}).", ""]


def changes_lines(results: Results) -> list[str]:
    out = []
    for name, arm in results.arms.items():
        if arm.changes is not None:
            c = arm.changes
            out.append(f"- **{md(name)}** vs {md(c.against)} on {md(c.metric)}: fixed {len(c.fixed)} examples, "
                       f"broke {len(c.broke)}")
    return ["Per-example changes (listed in report.html):", "", *out, ""] if out else []


def pareto_table(results: Results) -> list[str]:
    metric = fmt.primary_metric(results)
    front = fmt.pareto_front(results, metric)
    by_cpu = fmt.cost_by_cpu(results)
    cost_name = fmt.training_cost_name(by_cpu)
    rows = [_row([md(k), fmt.num(a.metrics[metric].value), fmt.seconds(fmt.training_seconds(a.cost, by_cpu)),
                  "◆ Pareto front" if k in front else ""])
            for k, a in fmt.ok_arms(results).items() if metric in a.metrics and a.cost is not None]
    if not rows:
        return []
    return ["## Quality vs cost", "", _row(["arm", f"{md(metric)} {_arrow(results, metric)}", cost_name, "front"]),
            "|---|---:|---:|---|", *rows, "",
            f"◆ Pareto front: no other arm is as good or better on both quality and {cost_name}.", ""]


def cost_table(results: Results) -> list[str]:
    lines = [_row(["arm", "train time", "train CPU time", "steps", "train tokens", "target tokens", "peak memory",
                   "trainable / total params", "artifact", "eval time", "eval tokens"]),
             "|---|" + "---:|" * 10]
    for name, arm in results.arms.items():
        c = arm.cost
        if c is None:
            lines.append(_row([md(name), *([fmt.DASH] * 10)]))
            continue
        lines.append(_row([md(name), fmt.seconds(c.train_seconds), fmt.cpu_seconds(c), f"{c.train_steps:,}",
                           fmt.count(c.train_tokens),
                           fmt.count(c.train_target_tokens), fmt.size(c.peak_memory_bytes),
                           f"{fmt.count(c.trainable_params)} / {fmt.count(c.total_params)}",
                           fmt.size(c.artifact_bytes), fmt.seconds(c.eval_seconds), fmt.count(c.eval_tokens)]))
    return lines


def forgetting_table(results: Results) -> list[str]:
    names = fmt.general_metrics(results)
    if not names:
        return []
    base = results.general.base if results.general else {}
    lines = ["## Forgetting: general abilities vs the base model", "",
             _row(["arm", *(f"{md(m)} {_arrow(results, m)}" for m in names), "largest significant drop"]),
             "|---|" + "---:|" * len(names) + "---|",
             _row(["base model", *(fmt.metric_cell(base.get(m)) for m in names), "reference"])]
    for name, arm in fmt.ok_arms(results).items():
        if not arm.general and not arm.forgetting:
            continue
        cells = []
        for m in names:
            c = fmt.comparison(arm, m, "base", forgetting=True)
            text = fmt.metric_cell(arm.general.get(m))
            cells.append(f"{text} (Δ {fmt.delta_cell(c)})" if c else text)
        lines.append(_row([md(name), *cells, md(fmt.forgetting_summary(arm))]))
    return lines + ["", "Δ: this arm minus the base model, with its interval and p-value.", ""]


def verdict_lines(results: Results) -> list[str]:
    d = results.decision
    if d is None:
        return ["## Verdict", "", "No decision policy evaluated: read the comparisons below.", ""]
    facts = [f"fine-tuned arm **{md(d.arm)}**" if d.arm else "", f"prompt-only arm **{md(d.prompt_arm)}**"
             if d.prompt_arm else "", f"about {d.needed_test_examples:,} test examples would settle it"
             if d.needed_test_examples is not None else ""]
    out = ["## Verdict", "", f"**{fmt.VERDICT_TEXT[d.verdict]}**" + (
        " · " + " · ".join(f for f in facts if f) if any(facts) else ""), ""]
    out += [f"- {md(reason)}" for reason in d.reasons]
    policy = ", ".join(f"{md(k)} {md(v)}" for k, v in fmt.flatten("", d.policy))
    return out + ["", f"Policy: {policy}." if policy else "", ""]


def environment_lines(results: Results) -> list[str]:
    env = dict(results.environment)
    versions = env.pop("versions", {}) or {}
    out = ["## Environment and fingerprints", ""]
    out += [f"- {md(k)}: {md(v)}" for k, v in fmt.flatten("", env)]
    if versions:
        out.append("- versions: " + ", ".join(f"{md(k)} {md(v or 'not installed')}" for k, v in versions.items()))
    s = results.suite
    out.append(f"- suite: {md(s.get('name'))} ({md(s.get('path'))}), sha256 {md(s.get('sha256') or fmt.DASH)}")
    out += [f"- data {md(split)}: {md(d.source)}, {d.examples:,} examples, sha256 {md(d.sha256 or '– (hub dataset)')}"
            for split, d in results.data.items()]
    out.append("- model: " + ", ".join(f"{md(k)} {md(v)}" for k, v in results.model.items()))
    if results.general:
        out += [f"- general {md(k)}: {md(t.kind)}, {md(t.source)}, {t.examples:,} items, sha256 {md(t.sha256 or '–')}"
                for k, t in results.general.tasks.items()]
    if results.stats:
        out.append("- stats: " + ", ".join(f"{md(k)} {md(v)}" for k, v in fmt.flatten("", results.stats)))
    return out + [""]


def render_markdown(results: Results) -> str:
    suite, n = results.suite, fmt.n_test(results)
    out = [f"# {md(suite.get('name', 'run'))}: fine-tuning vs prompting", "",
           f"Model {md(results.model.get('ref', fmt.DASH))} · {n if n is not None else '?'} test examples · "
           f"seed {md(suite.get('seed', fmt.DASH))} · harness {md(results.harness_version)} · "
           f"{md(results.created)}", ""]
    out += verdict_lines(results)
    out += ["## Task metrics", "", *metric_table(results), "",
            "Value [confidence interval]; best per metric in bold. ↑ higher is better, ↓ lower is better.", ""]
    out += [f"- **{md(m)}**: {md(info.get('variant', ''))}" for m, info in results.metrics.items()]
    out += ["", *delta_table(results), *changes_lines(results), *pareto_table(results)]
    out += ["## Cost ledger", "", *cost_table(results), "", *forgetting_table(results)]
    failed = fmt.failed_arms(results)
    if failed:
        out += ["## Failed arms", ""]
        out += [f"- **{md(k)}** ({md(a.backend)}"
                + (f", exit code {a.exit_code}" if a.exit_code is not None else "") + f"): {md(a.error)}"
                for k, a in failed.items()]
        out.append("")
    out += environment_lines(results)
    return "\n".join(out)
