"""report.html in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright):
no console errors, no request but the file itself, charts that render, filters that work, and
script payloads from the data shown as text without running.

Skipped when chromium (or playwright) is missing, except in CI (CI=true), where it fails instead.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from reports import write_reports

from .report_fixture import IMG, SCRIPT, build_results

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")   # as harness/progress.py reads it

# Counts distinct colours (and the share of non-background pixels) of a PNG, in a blank page.
COLOURS_JS = """async (b64) => {
  const img = new Image(); img.src = "data:image/png;base64," + b64; await img.decode();
  const c = document.createElement("canvas"); c.width = img.width; c.height = img.height;
  const ctx = c.getContext("2d"); ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data, seen = new Set(); let ink = 0;
  for (let i = 0; i < d.length; i += 4) {
    seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    if (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235) ink++;
  }
  return [seen.size, ink / (d.length / 4)];
}"""


def _require(what: str, ok: bool) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{what} is missing, and CI=true: .ci/run installs it")
        pytest.skip(f"{what} is missing (apt-get install -y chromium; pip install -e '.[test]')")


@pytest.fixture(scope="module")
def browser():
    _require(str(CHROMIUM), CHROMIUM.exists())
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("the playwright Python package", False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def report(tmp_path, browser):
    """The fixture run's report.html opened from a file:// URL; records requests and errors."""
    results = build_results(tmp_path)
    write_reports(results, tmp_path)
    url = (tmp_path / "report.html").resolve().as_uri()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = {"requests": [], "errors": []}
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("console", lambda m: m.type in ("error", "warning") and seen["errors"].append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: seen["errors"].append(f"pageerror: {e}"))
    page.goto(url, wait_until="load")
    page.wait_for_timeout(300)             # late requests (favicon, fonts) would show up here
    yield page, url, seen, results
    page.close()


def _colours(browser, png: bytes) -> tuple[int, float]:
    blank = browser.new_page()
    try:
        return tuple(blank.evaluate(COLOURS_JS, base64.b64encode(png).decode()))
    finally:
        blank.close()


def test_loads_offline_without_errors_and_payloads_stay_text(report):
    page, url, seen, _ = report
    assert seen["requests"] == [url]
    assert seen["errors"] == []
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.querySelectorAll('script').length") == 1
    assert page.evaluate("document.querySelectorAll('img, iframe, object, embed, link').length") == 0
    failed = page.locator("#failed pre.err")
    assert failed.is_visible() and SCRIPT in failed.inner_text()
    card = page.locator("article.ex[data-arm='lora']", has_text="id test-0003")
    assert card.is_visible()
    text = card.inner_text()
    assert SCRIPT in text and "<b>x</b>" in text and IMG in text
    assert "<b>x</b>" in page.locator("#verdict").inner_text()


def test_charts_render(report, browser):
    page, _, _, _ = report
    charts = page.locator("svg.chart")
    assert charts.count() == 8
    for i in range(charts.count()):
        chart = charts.nth(i)
        chart.scroll_into_view_if_needed()
        box = chart.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 100, (i, box)
        colours, ink = _colours(browser, chart.screenshot())
        assert colours > 20 and ink > 0.03, (i, colours, ink)
    for selector in ("rect.bar", "polyline.line", "circle.point", "path.front"):
        shapes = page.locator(selector)
        assert shapes.count() > 0, selector
        for i in range(shapes.count()):
            box = shapes.nth(i).bounding_box()
            assert box and (box["width"] > 0 or box["height"] > 0), (selector, i, box)
    colours, ink = _colours(browser, page.screenshot(full_page=True))
    assert colours > 200 and ink > 0.05


def test_example_filters(report):
    page, _, _, results = report
    count = page.locator("#ex-count")
    cards = page.locator("article.ex:visible")
    total = sum(len(a.changes.fixed) + len(a.changes.broke) for a in results.arms.values() if a.changes)
    assert count.inner_text() == f"{total} of {total} shown" and cards.count() == total
    lora = results.arms["lora"].changes
    page.select_option("#ex-arm", "lora")
    assert cards.count() == len(lora.fixed) + len(lora.broke)
    page.select_option("#ex-kind", "broke")
    assert cards.count() == len(lora.broke)
    assert count.inner_text() == f"{len(lora.broke)} of {total} shown"
    page.select_option("#ex-arm", "")
    page.select_option("#ex-kind", "")
    page.fill("#ex-q", "__pwned")
    assert cards.count() == 3                  # test-0003, fixed by full, lora and qlora
    page.fill("#ex-q", "no such text anywhere")
    assert cards.count() == 0 and page.locator("#ex-empty").is_visible()
