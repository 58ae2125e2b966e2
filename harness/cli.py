"""The `harness` command line. It only parses arguments, calls the stages and prints."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from harness.errors import HarnessError


def _fail(lines: list[str], code: int):
    from harness.errors import redact

    for line in lines:
        click.echo(redact(line), err=True)
    sys.exit(code)


def handle_errors(func):
    """Expected errors: one line each and their exit code. Bugs: a short line, traceback with --debug."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_root().params.get("debug")
        try:
            return func(*args, **kwargs)
        except HarnessError as exc:
            if debug:
                raise
            _fail(exc.lines(), exc.exit_code)
        except KeyboardInterrupt:
            _fail(["interrupted; finished arms are kept in results.json"], 130)
        except Exception as exc:  # noqa: BLE001
            if debug:
                raise
            _fail([f"internal error: {type(exc).__name__}: {exc}",
                   "hint: rerun with --debug for the traceback, and report it"], 1)

    return wrapper


@click.group()
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="harness")
def main(debug: bool):
    """Does fine-tuning beat prompting for this task and this model? Measured."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@main.command()
@click.argument("suite_path", type=click.Path(path_type=Path))
@handle_errors
def validate(suite_path: Path):
    """Check a suite without loading any model (the same checks compare runs)."""
    from harness.data import load_data
    from harness.suite import load_suite

    suite = load_suite(suite_path)
    load_data(suite)        # the data checks compare runs too (columns, labels, lines, encodings)
    click.echo(f"{suite_path}: ok ({len(suite.backends)} arms: {', '.join(suite.backends)})")


@main.command()
def backends():
    """List the registered backends and their options."""
    from harness import registry

    for name in registry.names():
        cls = registry.get(name)
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip()
        click.echo(f"{name}: {doc.splitlines()[0] if doc else ''}")
        for field, info in cls.Options.model_fields.items():
            click.echo(f"    {field} (default {info.default!r}): {info.description}")


@main.command()
@click.argument("suite_path", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default runs/<suite>/<time>).")
@click.option("--only", multiple=True, help="Run only these arms (repeatable, or comma-separated).")
@click.option("--fail-on", type=click.Choice(["no-go", "inconclusive"]),
              help="Exit 1 on this verdict: no-go (NO-GO or INCONCLUSIVE) or inconclusive (INCONCLUSIVE).")
@click.option("--no-cache", is_flag=True, help="Run every arm again, ignoring cached results and checkpoints.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: one arm after another, each in its own process. ray: every arm as a Ray task with the "
                   "resources it declares (pip install 'harness[ray]').")
@click.option("--address", help="With --executor ray: the Ray cluster (ray://HOST:10001 or HOST:6379); default: "
                                "start Ray on this machine.")
@handle_errors
def compare(suite_path: Path, out: Path | None, only: tuple[str, ...], fail_on: str | None, no_cache: bool,
            executor: str, address: str | None):
    """Train and evaluate every arm of SUITE; write results.json, report.md and report.html."""
    from harness import models
    from harness.arm import run_arm_isolated
    from harness.errors import UsageError
    from harness.cache import ArmCache
    from harness.compare import default_out_dir, run_compare, select_arms
    from harness.data import load_data
    from harness.suite import load_suite
    from reports import write_reports

    if address and executor != "ray":
        raise UsageError("--address is for --executor ray", "add --executor ray, or leave --address out")
    suite = load_suite(suite_path)
    arms = select_arms(suite, [n for item in only for n in item.split(",") if n])
    data = load_data(suite)
    model = models.resolve(suite.model, suite.base_dir, trust_remote_code=suite.trust_remote_code)
    out = out or default_out_dir(suite)
    click.echo(f"{suite.name}: {len(arms)} arms on {suite.model}, "
               f"{len(data.train)} train / {len(data.test)} test examples -> {out}", err=True)

    def progress(name, result):
        if result.status == "ok":
            c = result.cost
            shown = ", ".join(f"{m}={v.value:.3f}" for m, v in result.metrics.items())
            how = ("cached" if result.cached else f"trained model cached, eval {c.eval_seconds:.0f}s"
                   if result.train_cached else f"train {c.train_seconds:.0f}s, eval {c.eval_seconds:.0f}s")
            click.echo(f"  {name}: {shown} ({how})", err=True)
        else:
            click.echo(f"  {name}: FAILED: {result.error}", err=True)

    runner, stop = run_arm_isolated, lambda: None
    if executor == "ray":
        from harness.ray_executor import open_runner

        runner, stop = open_runner(suite, address, lambda line: click.echo(line, err=True))
    try:
        results = run_compare(suite, data, model, out, arms, on_arm=progress, runner=runner,
                              cache=ArmCache(read=not no_cache))
    finally:
        stop()
    for path in write_reports(results, out):
        click.echo(f"wrote {path}", err=True)
    from reports.markdown import metric_table

    click.echo("\n".join(metric_table(results)))
    if results.decision:
        d = results.decision
        click.echo(f"\nVERDICT: {d.verdict}" + (f" (fine-tune with {d.arm})" if d.arm else
                                                 f" (keep prompting with {d.prompt_arm})" if d.verdict == "NO-GO" else ""))
        click.echo("\n".join(f"  - {reason}" for reason in d.reasons))
    failed = [a for a in results.arms.values() if a.status != "ok"]
    if failed:      # the first failure's class: 3 data, 5 training/backend, 6 memory or disk
        sys.exit(failed[0].exit_code if failed[0].exit_code in (3, 4, 6) else 5)
    if results.decision and fail_on and (results.decision.verdict == "INCONCLUSIVE" or
                                         (fail_on == "no-go" and results.decision.verdict == "NO-GO")):
        sys.exit(1)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True))
@handle_errors
def report(run_dir: Path):
    """Re-render the reports of RUN_DIR from its results.json (no model is loaded)."""
    from harness.results import read_results
    from reports import write_reports

    results = read_results(run_dir)
    for path in write_reports(results, run_dir if run_dir.is_dir() else run_dir.parent):
        click.echo(f"wrote {path}")



# -- the regression gate (harness/gate.py): eval, baseline, regress; and export ---------------------------

def _candidate_options(func):
    path = click.Path(path_type=Path)
    options = [
        click.option("--adapter", type=path, help="PEFT adapter directory (e.g. RUN/arms/lora/adapter)."),
        click.option("--model", "model_dir", type=path, help="Merged or fully fine-tuned model directory."),
        click.option("--allow-pickle", is_flag=True, help="Accept pickle files (.bin .pt .pkl ...); they are loaded "
                                                          "with torch's weights-only unpickler. Only for files you "
                                                          "trust."),
        click.option("--allow-base-mismatch", is_flag=True, help="Accept an adapter that names another base model."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command("eval")
@click.argument("suite_path", type=click.Path(path_type=Path))
@_candidate_options
@handle_errors
def eval_command(suite_path: Path, adapter, model_dir, allow_pickle: bool, allow_base_mismatch: bool):
    """Evaluate one candidate on SUITE's test split and its general tasks."""
    from harness import gate, gate_report

    ctx = gate.load_context(suite_path)
    candidate = gate.check_candidate(ctx, adapter, model_dir, allow_pickle, allow_base_mismatch)
    evaluation = gate.evaluate_candidate(ctx, candidate, allow_pickle)
    click.echo(gate_report.evaluation_text(ctx.suite.name, evaluation))
    if not evaluation.probe.applied:
        click.echo(f"warning: {evaluation.probe.describe()}; harness regress fails such a candidate", err=True)


@main.command()
@click.argument("suite_path", type=click.Path(path_type=Path))
@_candidate_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Baseline file to write (JSON).")
@handle_errors
def baseline(suite_path: Path, adapter, model_dir, allow_pickle: bool, allow_base_mismatch: bool, out: Path):
    """Record a candidate's scores, per-example rows and fingerprints as a baseline for regress."""
    from harness import gate, gate_report

    ctx = gate.load_context(suite_path)
    candidate = gate.check_candidate(ctx, adapter, model_dir, allow_pickle, allow_base_mismatch)
    evaluation = gate.evaluate_candidate(ctx, candidate, allow_pickle)
    gate.write_baseline(gate.make_baseline(ctx, evaluation), out)
    click.echo(gate_report.evaluation_text(ctx.suite.name, evaluation))
    if not evaluation.probe.applied:
        click.echo(f"warning: {evaluation.probe.describe()}", err=True)
    click.echo(f"wrote {out}", err=True)


@main.command()
@click.argument("suite_path", type=click.Path(path_type=Path))
@_candidate_options
@click.option("--baseline", "baseline_path", type=click.Path(path_type=Path), required=True,
              help="Baseline file written by harness baseline.")
@click.option("--junit", type=click.Path(path_type=Path), help="Write JUnit XML here.")
@click.option("--markdown", type=click.Path(path_type=Path), help="Write the Markdown summary here.")
@click.option("--margin", multiple=True, help="Override the suite's margins: one for every gated metric "
                                              "(0.02, 5%) or NAME=MARGIN (repeatable).")
@click.option("--confidence", type=float, help="Override regression.confidence (one-sided).")
@handle_errors
def regress(suite_path: Path, adapter, model_dir, allow_pickle: bool, allow_base_mismatch: bool, baseline_path: Path,
            junit: Path | None, markdown: Path | None, margin: tuple[str, ...], confidence: float | None):
    """Compare a candidate with a baseline, per example: exit 0 pass, 1 regression, 7 not comparable."""
    from harness import gate, gate_report

    def run():
        ctx = gate.load_context(suite_path, margin, confidence)
        candidate = gate.check_candidate(ctx, adapter, model_dir, allow_pickle, allow_base_mismatch)
        return gate.run_regress(ctx, candidate, baseline_path, allow_pickle)

    result = gate_report.run_with_reports(run, suite_path, junit, markdown)
    click.echo(gate_report.markdown(result))
    click.echo(f"regress: {'PASS' if result.passed else 'FAIL'} in {result.seconds['total']:.1f}s", err=True)
    sys.exit(0 if result.passed else 1)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("arm")
@click.option("--merged", type=click.Path(path_type=Path), required=True,
              help="Directory for the merged model (adapter folded into the base weights, safetensors).")
@handle_errors
def export(run_dir: Path, arm: str, merged: Path):
    """Export ARM of RUN_DIR as one plain model directory for serving (merge_and_unload)."""
    from harness.export import export_merged

    click.echo(f"wrote {export_merged(run_dir, arm, merged)}")


if __name__ == "__main__":
    main()
