"""report.md: the comparison table and the cost ledger, rendered from results.json only."""

from __future__ import annotations

from harness.results import Results


def _fmt_metric(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _best(results: Results, metric: str) -> float | None:
    values = [a.metrics[metric].value for a in results.arms.values() if metric in a.metrics]
    if not values:
        return None
    return max(values) if results.metrics[metric]["higher_is_better"] else min(values)


def metric_table(results: Results) -> list[str]:
    metrics = list(results.metrics)
    arrows = ["↑" if results.metrics[m]["higher_is_better"] else "↓" for m in metrics]
    lines = ["| arm | backend | " + " | ".join(f"{m} {a}" for m, a in zip(metrics, arrows)) + " |",
             "|---|---|" + "---:|" * len(metrics)]
    best = {m: _best(results, m) for m in metrics}
    for name, arm in results.arms.items():
        if arm.status != "ok":
            lines.append(f"| {name} | {arm.backend} | " + " | ".join("failed" for _ in metrics) + " |")
            continue
        cells = []
        for m in metrics:
            value = arm.metrics[m].value
            text = _fmt_metric(value)
            cells.append(f"**{text}**" if value == best[m] else text)
        lines.append(f"| {name} | {arm.backend} | " + " | ".join(cells) + " |")
    return lines


def cost_table(results: Results) -> list[str]:
    lines = ["| arm | train s | train tokens | peak memory | trainable params | total params | artifact | eval s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, arm in results.arms.items():
        c = arm.cost
        if c is None:
            lines.append(f"| {name} | – | – | – | – | – | – | – |")
            continue
        lines.append(f"| {name} | {c.train_seconds:.1f} | {c.train_tokens:,} | {_fmt_bytes(c.peak_memory_bytes)} | "
                     f"{c.trainable_params:,} | {c.total_params:,} | {_fmt_bytes(c.artifact_bytes)} | "
                     f"{c.eval_seconds:.1f} |")
    return lines


def render_markdown(results: Results) -> str:
    suite, env = results.suite, results.environment
    n = next((m.n for a in results.arms.values() for m in a.metrics.values()), 0)
    out = [f"# {suite['name']}: fine-tuning vs prompting", "",
           f"Model `{results.model['ref']}` · {n} test examples · seed {suite['seed']} · "
           f"harness {results.harness_version} · {results.created}", "",
           "## Metrics", "", *metric_table(results), "",
           "Best value per metric in bold. ↑ higher is better, ↓ lower is better.", ""]
    out += [f"- **{m}**: {info['variant']}" for m, info in results.metrics.items()]
    out += ["", "## Cost ledger", "", *cost_table(results), ""]
    failed = {k: a for k, a in results.arms.items() if a.status != "ok"}
    if failed:
        out += ["## Failed arms", ""]
        out += [f"- **{k}** ({a.backend}): {a.error}" for k, a in failed.items()]
        out.append("")
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    out += ["## Environment", "", f"- device: {env.get('device')}, {env.get('cpu_threads')} threads, "
            f"train dtype {env.get('train_dtype')}, eval dtype {env.get('eval_dtype')}",
            f"- python {env.get('python')} on {env.get('platform')}", f"- {versions}", ""]
    return "\n".join(out)
