"""Report renderers: pure functions of results.json (no model, no numbers computed here)."""

from __future__ import annotations

from pathlib import Path

from harness.results import Results, atomic_write_text


def write_reports(results: Results, out_dir: Path) -> list[Path]:
    from reports.markdown import render_markdown

    path = out_dir / "report.md"
    atomic_write_text(path, render_markdown(results))
    return [path]
