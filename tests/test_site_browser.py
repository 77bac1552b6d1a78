"""The report page and the leaderboard in a real headless browser (Debian's chromium and its driver,
driven by selenium: ``pip install 'osrbench[browser]'``; ``apt-get install chromium chromium-driver``).

Each page loads with no console message of level error, clicking a header reorders the rows, the
numbers shown are the bundle's, and names written to run script (in a method, recipe or plugin)
stay text: ``window.__pwned`` is never set. Skipped, saying what is missing, without them.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from osrbench import cli, compare, export

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium: "
                                                             "pip install 'osrbench[browser]'")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="the browser tests need chromium and its driver: "
                                                                  "apt-get install chromium chromium-driver")

_spec = importlib.util.spec_from_file_location("_report_helpers", Path(__file__).with_name("test_report.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
make_record = _helpers.make_record

HOSTILE = ["<img src=x onerror=window.__pwned=1>", "<script>window.__pwned=1</script>"]
PLUGIN = {"name": "<svg onload=window.__pwned=1>", "distribution": "<b>d</b>", "version": "1"}


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", "--disable-extensions"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)  # no driver download
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A report page of two methods (one hostile) on two datasets, and a leaderboard of two bundles."""
    root = tmp_path_factory.mktemp("site")
    rng = np.random.default_rng(3)
    for dataset in ("digits", "fashion-mnist"):
        for method, recipe, plugin in (("softmax", "arpl-release", None), (HOSTILE[0], HOSTILE[1], PLUGIN)):
            for k in range(2):
                make_record(method, k, 0, {}, dataset=dataset, recipe=recipe, root=root / "runs", scores_rng=rng,
                            plugin=plugin)
    assert cli.main(["report", "--runs", str(root / "runs"), "--format", "html", "-o", str(root / "report.html"),
                     "--metrics", "auroc,oscr"]) == 0
    bundles = []
    for lab, methods in (("lab-a", ["softmax", "arpl"]), ("lab-b", ["dias", HOSTILE[1]])):
        recs = [make_record(m, k, 0, {"auroc": float(rng.uniform(0.6, 0.95)), "oscr": float(rng.uniform(0.5, 0.9))})
                for m in methods for k in range(3)]
        bundles.append(export.write_export(root / f"{lab}.json",
                                           export.export_doc(compare.build(recs, methods, ["auroc", "oscr"]))))
    assert cli.main(["leaderboard", str(root / "lab-a.json"), str(root / "lab-b.json"), "--out", str(root / "out")]) \
        == 0
    page = next((root / "out").glob("digits-auroc-*.html"))
    return root / "report.html", page, bundles


def _open(browser, path: Path) -> None:
    browser.get_log("browser")  # drop what an earlier page logged
    browser.get(path.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"


def _errors(browser) -> list[dict]:
    return [e for e in browser.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]


TABLE_JS = """
const t = [...document.querySelectorAll("table")].find(t => t.caption && t.caption.textContent === arguments[0]);
const heads = [...t.tHead.rows[0].cells].map(c => c.textContent);
return {heads: heads, rows: [...t.tBodies[0].rows].map(r => [...r.cells].map(
    c => ({text: c.textContent, value: c.getAttribute("data-value")})))};
"""


def _header(browser, caption: str, name: str):
    from selenium.webdriver.common.by import By

    for table in browser.find_elements(By.TAG_NAME, "table"):
        caps = table.find_elements(By.TAG_NAME, "caption")
        if caps and caps[0].text == caption:
            return next(th for th in table.find_elements(By.CSS_SELECTOR, "thead th") if th.text.strip() == name)
    raise AssertionError(f"no table {caption!r}")


def test_report_page_loads_clean_and_hostile_names_stay_text(browser, site):
    from selenium.webdriver.common.by import By

    report, _, _ = site
    _open(browser, report)
    assert _errors(browser) == []
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    body = browser.find_element(By.TAG_NAME, "body").text
    assert HOSTILE[0] in body and HOSTILE[1] in body and PLUGIN["name"] in body
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure svg")) >= 4  # the inline figures render as SVG
    # sorting the first AUROC table by its mean reorders its two rows, both ways
    first = browser.execute_script(TABLE_JS, "AUROC (%)")
    mean = first["heads"].index("mean")
    _header(browser, "AUROC (%)", "mean").click()
    up = browser.execute_script(TABLE_JS, "AUROC (%)")
    _header(browser, "AUROC (%)", "mean").click()
    down = browser.execute_script(TABLE_JS, "AUROC (%)")
    ups = [float(r[mean]["value"]) for r in up["rows"]]
    assert ups == sorted(ups) and [float(r[mean]["value"]) for r in down["rows"]] == sorted(ups, reverse=True)
    assert _errors(browser) == []


def test_leaderboard_numbers_are_the_bundles_and_headers_sort(browser, site):
    _, page, bundles = site
    _open(browser, page)
    assert _errors(browser) == []
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    t = browser.execute_script(TABLE_JS, "Leaderboard")
    heads = t["heads"]
    col = {h.replace(" \u25b2", "").replace(" \u25bc", ""): i for i, h in enumerate(heads)}
    by_bundle = {"lab-a.json": bundles[0], "lab-b.json": bundles[1]}
    shown = set()
    for r in t["rows"]:
        m = by_bundle[r[col["bundle"]]["text"]]["methods"][r[col["method"]]["text"]]
        for metric, short in (("auroc", "AUROC"), ("oscr", "OSCR")):
            mean = m["metrics"][metric]["mean"]
            assert float(r[col[f"{short} mean"]]["value"]) == mean
            assert r[col[f"{short} mean"]]["text"].rstrip(" \u2605") == f"{100 * mean:.2f}"
        shown.add(r[col["method"]]["text"])
    assert HOSTILE[1] in shown and len(shown) == 4
    before = [r[col["method"]]["text"] for r in t["rows"]]
    _header(browser, "Leaderboard", "method").click()
    after = [r[col["method"]]["text"] for r in browser.execute_script(TABLE_JS, "Leaderboard")["rows"]]
    expected = browser.execute_script("return arguments[0].slice().sort((a, b) => a.localeCompare(b))", before)
    assert after == expected and sorted(after) == sorted(before)
    _header(browser, "Leaderboard", "method").click()
    again = [r[col["method"]]["text"] for r in browser.execute_script(TABLE_JS, "Leaderboard")["rows"]]
    assert again == expected[::-1]
    _header(browser, "Leaderboard", "OSCR mean").click()
    oscr = [float(r[col["OSCR mean"]]["value"]) for r in browser.execute_script(TABLE_JS, "Leaderboard")["rows"]]
    assert oscr == sorted(oscr)
    assert _errors(browser) == []
