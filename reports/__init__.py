"""Report renderers: pure functions of results.json (no model, no numbers computed here)."""

from __future__ import annotations

from pathlib import Path

from harness.results import Results, atomic_write_text


def write_reports(results: Results, out_dir: Path) -> list[Path]:
    """Write report.md and report.html into the run directory `out_dir`, each atomically."""
    from reports.html import render_html
    from reports.markdown import render_markdown

    out_dir = Path(out_dir)
    written = []
    for name, text in (("report.md", render_markdown(results)), ("report.html", render_html(results, out_dir))):
        path = out_dir / name
        atomic_write_text(path, text)
        written.append(path)
    return written
