"""The `harness` command line. It only parses arguments, calls the stages and prints."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from harness.errors import HarnessError


def _fail(lines: list[str], code: int):
    for line in lines:
        click.echo(line, err=True)
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
    from harness.suite import load_suite

    suite = load_suite(suite_path)
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
@handle_errors
def compare(suite_path: Path, out: Path | None, only: tuple[str, ...], fail_on: str | None):
    """Train and evaluate every arm of SUITE; write results.json, report.md and report.html."""
    from harness import models
    from harness.compare import default_out_dir, run_compare, select_arms
    from harness.data import load_data
    from harness.suite import load_suite
    from reports import write_reports

    suite = load_suite(suite_path)
    arms = select_arms(suite, [n for item in only for n in item.split(",") if n])
    data = load_data(suite)
    model = models.resolve(suite.model, suite.base_dir)
    out = out or default_out_dir(suite)
    click.echo(f"{suite.name}: {len(arms)} arms on {suite.model}, "
               f"{len(data.train)} train / {len(data.test)} test examples -> {out}", err=True)

    def progress(name, result):
        if result.status == "ok":
            c = result.cost
            shown = ", ".join(f"{m}={v.value:.3f}" for m, v in result.metrics.items())
            click.echo(f"  {name}: {shown} (train {c.train_seconds:.0f}s, eval {c.eval_seconds:.0f}s)", err=True)
        else:
            click.echo(f"  {name}: FAILED: {result.error}", err=True)

    results = run_compare(suite, data, model, out, arms, on_arm=progress)
    for path in write_reports(results, out):
        click.echo(f"wrote {path}", err=True)
    from reports.markdown import metric_table

    click.echo("\n".join(metric_table(results)))
    if results.decision:
        d = results.decision
        click.echo(f"\nVERDICT: {d.verdict}" + (f" (fine-tune with {d.arm})" if d.arm else
                                                 f" (keep prompting with {d.prompt_arm})" if d.verdict == "NO-GO" else ""))
        click.echo("\n".join(f"  - {reason}" for reason in d.reasons))
    if any(a.status != "ok" for a in results.arms.values()):
        sys.exit(5)
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


if __name__ == "__main__":
    main()
