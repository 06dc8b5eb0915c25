"""The report rendered in headless Chromium: every plot present, decoded and non-empty."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from shaver.report.html import write_report
from test_report_render import synthetic_document

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
)

# Each plot: an <img> (PNG) or an inline <svg>, measured after layout.
MEASURE_JS = """
const out = [];
for (const fig of document.querySelectorAll('figure[data-plot]')) {
  const img = fig.querySelector('img.plot');
  const svg = fig.querySelector('div.plot > svg');
  if (img) {
    out.push({slug: fig.dataset.plot, kind: 'img', complete: img.complete,
              w: img.naturalWidth, h: img.naturalHeight});
  } else if (svg) {
    const box = svg.getBoundingClientRect();
    out.push({slug: fig.dataset.plot, kind: 'svg', complete: true,
              w: box.width, h: box.height, shapes: svg.querySelectorAll('path,use').length});
  } else {
    out.push({slug: fig.dataset.plot, kind: 'none', complete: false, w: 0, h: 0});
  }
}
return out;
"""


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium / chromedriver missing in CI (make browser-deps installs them)")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium "
                    "chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()


@pytest.mark.parametrize("image_format", ["png", "svg"])
def test_every_plot_renders_in_chromium(driver, tmp_path, image_format):
    doc = synthetic_document()
    report: Path = write_report(doc, tmp_path / "report.html", image_format=image_format)
    driver.get(report.as_uri())
    assert driver.title == "synthetic <report>"
    plots = driver.execute_script(MEASURE_JS)
    slugs = [p["slug"] for p in plots]
    assert len(slugs) == 4, slugs
    assert any(s.startswith("tradeoff-") for s in slugs)
    assert "convergence" in slugs
    assert any(s.startswith("heatmap-") for s in slugs)
    assert any(s.startswith("fields-") for s in slugs)
    for plot in plots:
        assert plot["kind"] == ("img" if image_format == "png" else "svg"), plot
        assert plot["complete"] and plot["w"] > 0 and plot["h"] > 0, plot
        if image_format == "svg":
            assert plot["shapes"] > 10, plot
    tables = driver.execute_script(
        "return Array.from(document.querySelectorAll('table')).map(t => t.rows.length);")
    assert len(tables) == 3 and all(n > 1 for n in tables), tables  # results, timings, env


def test_a_broken_image_is_detected(driver, tmp_path):
    """Negative control: the measurement sees an undecodable PNG as an empty plot."""
    report = write_report(synthetic_document(seeds=(0,)), tmp_path / "report.html")
    text = report.read_text()
    start = text.index("base64,") + len("base64,")
    broken = tmp_path / "broken.html"
    broken.write_text(text[:start] + "AAAA" + text[text.index('"', start):])
    driver.get(broken.as_uri())
    widths = [p["w"] for p in driver.execute_script(MEASURE_JS)]
    assert widths[0] == 0 and all(w > 0 for w in widths[1:])
