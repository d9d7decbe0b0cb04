"""Open the report in a real headless Chromium: images render, nothing errs, nothing leaves.

Screenshots are kept under ``test-artifacts/`` (gitignored). Chromium missing is a failure, not a
skip, unless VECAP_SKIP_BROWSER=1 says so explicitly.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from pipeline.report import ReportConfig, build_report
from pipeline.report.synthetic import HOSTILE_ALT_TEXT, write_synthetic_output
from tests.report.cdp import INSTALL_HINT, Chromium, find_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PAGE_FACTS = """(() => ({
  title: document.title,
  images: Array.from(document.images).map(i => ({
    complete: i.complete, w: i.naturalWidth, h: i.naturalHeight, src: i.src.slice(0, 23)})),
  figures: Array.from(document.querySelectorAll('svg.figure')).map(
    s => s.getBoundingClientRect().width),
  hostileShownAsText: document.body.innerText.includes(%s),
  scripts: document.scripts.length,
  emptyNotice: !!Array.from(document.querySelectorAll('.empty')).find(
    e => e.innerText.includes('No shard of this output has finished yet')),
}))()"""


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    if os.environ.get("VECAP_SKIP_BROWSER") == "1":
        pytest.skip("VECAP_SKIP_BROWSER=1")
    binary = find_chromium()
    if binary is None:
        pytest.fail(f"chromium not found for the report's browser test: {INSTALL_HINT}")
    return binary


def test_report_renders_in_chromium(chromium_binary: str, tmp_path: Path) -> None:
    out = write_synthetic_output(tmp_path / "out", shards=3, rows_per_shard=16, seed=3)
    report = build_report(ReportConfig(str(out.root), sample_size=1000, seed=1))
    empty = tmp_path / "empty"
    (empty / "shards").mkdir(parents=True)
    empty_report = build_report(ReportConfig(str(empty)))

    with Chromium(chromium_binary, tmp_path / "browser") as browser:
        browser.open(Path(report.path).as_uri())
        facts = browser.evaluate(PAGE_FACTS % json.dumps(HOSTILE_ALT_TEXT))
        browser.screenshot(ARTIFACTS / "report.png")
        errors, requests = browser.console_errors(), browser.requests()

        browser.open(Path(empty_report.path).as_uri())
        empty_facts = browser.evaluate(PAGE_FACTS % '"-"')
        browser.screenshot(ARTIFACTS / "report-empty.png")
        errors += browser.console_errors()
        requests += browser.requests()

    ok_rows = out.status_counts["ok"]
    assert report.sampled == ok_rows  # sample larger than the data: every ok row is shown
    assert len(facts["images"]) == ok_rows
    for img in facts["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img
        assert img["src"] == "data:image/jpeg;base64,"
    assert len(facts["figures"]) == 4 and all(w > 200 for w in facts["figures"])
    # The AltText's markup is shown as text and ran nothing.
    assert facts["hostileShownAsText"]
    assert facts["title"] == "vecap report"
    assert facts["scripts"] == 0
    assert empty_facts["emptyNotice"]
    assert errors == [], errors
    # Only the pages themselves were requested: every image is inline.
    assert all(u.startswith(("file://", "data:")) for u in requests), requests

    shot = Image.open(io.BytesIO((ARTIFACTS / "report.png").read_bytes())).convert("RGB")
    assert shot.width == 1280 and shot.height > 2000
    # A blank or unstyled page has few colours; thumbnails and figures bring thousands.
    assert len(shot.getcolors(maxcolors=1 << 20) or []) > 1000


def test_browser_checks_catch_broken_images_and_errors(
    chromium_binary: str, tmp_path: Path
) -> None:
    """The checks above can fail: a broken image, a console error, an exception, a CSP block."""
    from pipeline.report.html import CSP

    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        '<img src="data:image/jpeg;base64,/9j/AAAA">'
        "<script>console.error('boom'); setTimeout(() => { throw new Error('uncaught'); });"
        "</script></body></html>"
    )
    strict = tmp_path / "strict.html"
    strict.write_text(
        f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '</head><body><img src="https://images.example.org/x.jpg"></body></html>'
    )
    with Chromium(chromium_binary, tmp_path / "browser") as browser:
        browser.open(page.as_uri())
        images = browser.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        browser.evaluate("new Promise(r => setTimeout(r, 100))")  # let the timer throw
        bad_errors = browser.console_errors()
        browser.open(strict.as_uri())
        strict_errors = browser.console_errors()
        strict_requests = browser.requests()
        blocked = [
            e["params"].get("blockedReason")
            for e in browser.events
            if e["method"] == "Network.loadingFailed"
        ]

    assert images == [0]
    assert any("boom" in e for e in bad_errors), bad_errors
    assert any("uncaught" in e for e in bad_errors), bad_errors
    assert any("Content Security Policy" in e for e in strict_errors), strict_errors
    # The request check sees even an attempt, which the page's CSP then blocks before the wire.
    assert "https://images.example.org/x.jpg" in strict_requests
    assert blocked == ["csp"], blocked
