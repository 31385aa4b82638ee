"""The stakeholder report as a reader's browser shows it: headless Chromium driven over the DevTools protocol.

Chromium is installed by `make test` (the `browser` prerequisite). Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import ROOT, _run
from devtools import DevTools, launch

ARTIFACTS = ROOT / "tests" / "artifacts"
PROBE = "window.__koe_pwned"
PLANTED = [f"<script>{PROBE} = 1</script>危ない声", f'<img src=x onerror="{PROBE} = 2">画像の声']

pytestmark = pytest.mark.slow
# Japanese words: kana, kanji, half-width kana. Marks shared with Japanese typography (＝, the 〜 of span labels) are not words.
JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff66-\uff9f]")
WIDTHS = (1280, 390)
MAX_PRINT_PAGES = 12
MAX_TOPICS_PX = 3000  # the topics section at 1280 px on the test demo

# Every element that sticks out of the viewport (left or right), with what it is.
OVERFLOW_JS = """(() => { const w = document.documentElement.clientWidth, out = [];
  for (const e of document.querySelectorAll('body *')) { const r = e.getBoundingClientRect();
    if (r.width && (r.right > w + 1 || r.left < -1)) out.push(`${e.tagName}.${e.className} ${Math.round(r.left)}..${Math.round(r.right)}`); }
  return {width: w, scrollWidth: document.documentElement.scrollWidth, out: out.slice(0, 20)}; })()"""
# Follow every contents link; where its section then sits (below the sticky bar, at the top unless the page ended).
ANCHORS_JS = """(async () => { const bar = document.querySelector('nav.koe-toc'), barH = bar.getBoundingClientRect().height;
  document.documentElement.style.scrollBehavior = 'auto';  // the jump, not the animation
  const out = [];
  for (const a of bar.querySelectorAll('a')) { const id = decodeURIComponent(a.hash.slice(1)), t = document.getElementById(id);
    if (!t) { out.push({id, found: false}); continue; }
    window.scrollTo(0, 0); a.click(); await new Promise(r => setTimeout(r, 150));
    const top = t.getBoundingClientRect().top;
    const atEnd = window.scrollY + window.innerHeight >= document.documentElement.scrollHeight - 2;
    out.push({id, found: true, hidden: top < barH - 2, placed: top <= barH + 40 || atEnd, top, scrolled: window.scrollY}); }
  return out; })()"""


@pytest.fixture(scope="module")
def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("chromium is not installed: `make browser` (run by `make test`) installs it")
    return exe


def open_report(chromium: str, html: Path, name: str) -> tuple[DevTools, dict]:
    """Load the file, collect console/network/dialog events, save a full-page screenshot."""
    profile = Path(tempfile.mkdtemp(prefix="koe-chromium-"))
    proc, page = launch(chromium, profile, 1200, 900)
    try:
        for domain in ("Page", "Runtime", "Network", "Log", "DOM", "CSS"):
            page.send(f"{domain}.enable")
        url = html.resolve().as_uri()
        page.events.clear()
        page.send("Page.navigate", url=url)
        page.wait_for("Page.loadEventFired")
        page.js("document.fonts.ready.then(() => true)")
        time.sleep(0.5)  # late console messages
        page.send("Runtime.evaluate", expression="0")
        height = page.js("document.documentElement.scrollHeight")
        shot = page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": 1200, "height": min(height, 12000), "scale": 1})
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))
        page.proc, page.profile = proc, profile  # type: ignore[attr-defined]
        return page, {"url": url}
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)
        raise


def close(page: DevTools) -> None:
    page.close()
    os.killpg(page.proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]  # the whole group: renderers too
    page.proc.wait()  # type: ignore[attr-defined]
    shutil.rmtree(page.profile, ignore_errors=True)  # type: ignore[attr-defined]


def _problems(page: DevTools, url: str) -> tuple[list, list, list]:
    console = [e["params"] for e in page.events if e.get("method") == "Runtime.consoleAPICalled"
               and e["params"]["type"] in ("error", "assert")]
    console += [e["params"]["exceptionDetails"] for e in page.events if e.get("method") == "Runtime.exceptionThrown"]
    console += [e["params"]["entry"] for e in page.events if e.get("method") == "Log.entryAdded"
                and e["params"]["entry"]["level"] == "error"]
    requests = [e["params"]["request"]["url"] for e in page.events if e.get("method") == "Network.requestWillBeSent"]
    others = [u for u in requests if u != url and not u.startswith("data:")]
    dialogs = [e for e in page.events if e.get("method") == "Page.javascriptDialogOpening"]
    return console, others, dialogs


def _fonts(page: DevTools, selector: str) -> list[dict]:
    root = page.send("DOM.getDocument")["root"]["nodeId"]
    node = page.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
    text = page.send("DOM.describeNode", nodeId=node, depth=1)["node"]["children"][0]
    return page.send("CSS.getPlatformFontsForNode", nodeId=node)["fonts"] or [text]


@pytest.fixture(scope="module")
def report_roots(workspace, tmp_path_factory) -> dict[str, Path]:
    """The demo's ja report, and an en rendering of the same run with two hostile verbatims planted."""
    en = tmp_path_factory.mktemp("report-en")
    for rel in ("notebooks", "data/topics", "data/kpis", "data/sentiment", "reports/metrics"):
        shutil.copytree(workspace / rel, en / rel)
    shutil.copy(workspace / "reports/alerts.json", en / "reports/alerts.json")
    topics_path = en / "data/topics/topics.parquet"
    topics = pl.read_parquet(topics_path)
    first = topics.filter(pl.col("topic") != -1).sort("size", descending=True)["topic"][0]
    topics = topics.with_columns(pl.when(pl.col("topic") == first).then(pl.lit(PLANTED)).otherwise(pl.col("examples"))
                                 .alias("examples"))
    topics.write_parquet(topics_path)
    params = yaml.safe_load((workspace / "params.yaml").read_text(encoding="utf-8"))
    params["report"]["lang"] = "en"
    (en / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    _run(["koe", "stage", "report"], en)
    return {"ja": workspace / "reports/report.html", "en": en / "reports/report.html"}


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_report_opens_cleanly_offline(chromium, report_roots, lang):
    page, info = open_report(chromium, report_roots[lang], f"report-{lang}")
    try:
        console, others, dialogs = _problems(page, info["url"])
        assert console == [], console
        assert others == [], f"requests to other places: {others}"
        assert dialogs == []
        headings = page.js("[...document.querySelectorAll('h2')].map(h => h.textContent)")
        expected = {"ja": ["エグゼクティブサマリー", "主要KPI", "データ品質"], "en": ["Executive summary", "Key KPIs", "Data quality"]}
        for h in expected[lang]:
            assert h in headings, headings
        assert page.js("document.documentElement.lang") == lang
        # the summary comes first and is visible above the fold
        top = page.js("document.querySelector('.koe-summary').getBoundingClientRect().top")
        assert 0 <= top < 400
        images = page.js("[...document.images].map(i => [i.naturalWidth, i.alt])")
        assert len(images) >= 2 and all(w > 0 and alt for w, alt in images), images
    finally:
        close(page)


def test_japanese_glyphs_are_drawn_not_tofu(chromium, report_roots):
    page, _ = open_report(chromium, report_roots["ja"], "report-ja-fonts")
    try:
        fonts = _fonts(page, ".koe-summary h2")
        names = {f.get("familyName", "") for f in fonts}
        glyphs = sum(f.get("glyphCount", 0) for f in fonts)
        heading = page.js("document.querySelector('.koe-summary h2').textContent")
        assert glyphs >= len(heading.strip()) > 0, fonts
        # drawn by a font that has Japanese: the embedded IPAexGothic subset or a local CJK font
        assert any(n for n in names if "IPAex" in n or "CJK" in n or "Hiragino" in n or "Gothic" in n), names
        # and it draws different shapes for different characters (a missing glyph is the same box every time)
        bitmaps = page.js("""(() => ['エ', 'ロ', '変'].map(ch => {
            const c = document.createElement('canvas'); c.width = c.height = 48;
            const g = c.getContext('2d'); g.font = '40px ' + getComputedStyle(document.querySelector('.koe-summary h2')).fontFamily;
            g.fillText(ch, 2, 40); return c.toDataURL(); }))()""")
        assert len(set(bitmaps)) == 3
        tofu = page.js("""(() => ['\\u{E000}', '\\u{E001}'].map(ch => {
            const c = document.createElement('canvas'); c.width = c.height = 48;
            const g = c.getContext('2d'); g.font = '40px ' + getComputedStyle(document.querySelector('.koe-summary h2')).fontFamily;
            g.fillText(ch, 2, 40); return c.toDataURL(); }))()""")
        assert not set(bitmaps) & set(tofu)
    finally:
        close(page)


def test_planted_markup_in_verbatims_stays_text(chromium, report_roots, truth):
    html = report_roots["en"].read_text(encoding="utf-8")
    assert PLANTED[0] not in html and "&lt;script&gt;" in html
    page, info = open_report(chromium, report_roots["en"], "report-en-planted")
    try:
        assert page.js(f"typeof {PROBE}") == "undefined"  # neither the script nor the onerror ran
        assert page.js("document.querySelectorAll('script').length") == 0
        body = page.js("document.body.innerText")
        assert PLANTED[0] in body and PLANTED[1] in body  # shown to the reader as the text customers typed
        _, others, dialogs = _problems(page, info["url"])
        assert others == [] and dialogs == []
    finally:
        close(page)
    for lang in ("ja", "en"):
        text = report_roots[lang].read_text(encoding="utf-8")
        leaked = [p for p in truth["pii_strings"] if p in text]
        assert not leaked, (lang, leaked)


def measure(chromium: str, html: Path, name: str, width: int, height: int = 900) -> dict:
    """The page at one viewport width: overflow (details closed, then open), topics height, anchors; a full-page
    screenshot in tests/artifacts/."""
    profile = Path(tempfile.mkdtemp(prefix="koe-chromium-"))
    proc, page = launch(chromium, profile, width, height)
    try:
        page.send("Page.enable")
        page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=width < 600)
        page.send("Emulation.setEmulatedMedia", features=[{"name": "prefers-reduced-motion", "value": "reduce"}])
        page.events.clear()
        page.send("Page.navigate", url=html.resolve().as_uri())
        page.wait_for("Page.loadEventFired")
        page.js("document.fonts.ready.then(() => true)")
        out = {"closed": page.js(OVERFLOW_JS),
               "topics_px": page.js("document.getElementById('koe-topics').getBoundingClientRect().height"),
               "page_px": page.js("document.documentElement.scrollHeight")}
        page.js("window.scrollTo(0, 0)")
        full = page.js("document.documentElement.scrollHeight")
        shot = page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": min(full, 16000), "scale": 1})
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{name}-{width}.png").write_bytes(base64.b64decode(shot["data"]))
        out["anchors"] = page.js(ANCHORS_JS)
        page.js("document.querySelectorAll('details').forEach(d => d.open = true)")
        out["open"] = page.js(OVERFLOW_JS)
        page.close()
        return out
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def print_pdf(chromium: str, html: Path, pdf: Path) -> int:
    """Print the page to A4 as a reader's "Save as PDF" would; its page count."""
    profile = Path(tempfile.mkdtemp(prefix="koe-chromium-"))
    try:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--no-pdf-header-footer", f"--print-to-pdf={pdf}",
                        html.resolve().as_uri()], capture_output=True, timeout=180, check=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return pdf_pages(pdf.read_bytes())


def pdf_pages(data: bytes) -> int:
    """Page objects in a PDF (pypdf when installed; else Chromium's uncompressed page dictionaries)."""
    try:
        import io

        from pypdf import PdfReader
    except ImportError:
        return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))
    return len(PdfReader(io.BytesIO(data)).pages)


@pytest.mark.parametrize("width", WIDTHS)
def test_report_fits_the_screen_and_its_contents_resolve(chromium, report_roots, width):
    m = measure(chromium, report_roots["ja"], "report-ja", width)
    for state in ("closed", "open"):  # folded parts opened too
        assert m[state]["out"] == [] and m[state]["scrollWidth"] <= m[state]["width"], (state, m[state])
    if width >= 1000:
        assert m["topics_px"] < MAX_TOPICS_PX, m
    anchors = m["anchors"]
    assert [a["id"] for a in anchors][:2] == ["koe-summary", "koe-kpis"] and len(anchors) >= 5, anchors
    assert all(a["found"] and not a["hidden"] and a["placed"] for a in anchors), anchors
    assert (ARTIFACTS / f"report-ja-{width}.png").stat().st_size > 10_000


def test_report_prints_to_a_short_a4_document(chromium, report_roots):
    pages = print_pdf(chromium, report_roots["ja"], ARTIFACTS / "report-ja.pdf")
    assert 2 <= pages <= MAX_PRINT_PAGES, pages


def test_english_report_is_english(report_roots):
    """No Japanese outside verbatim quotes and elements marked lang="ja" (data shown as exported)."""
    from bs4 import BeautifulSoup

    doc = BeautifulSoup(report_roots["en"].read_text(encoding="utf-8"), "html.parser")
    quotes = doc.select(".koe-quote")
    assert quotes and any(JAPANESE.search(q.get_text()) for q in quotes)  # the verbatims themselves stay as written
    for e in doc.select('.koe-quote, body [lang="ja"], style'):
        e.decompose()
    text = doc.get_text(" ") + " ".join(i.get("alt", "") for i in doc.select("img"))
    found = sorted({text[max(m.start() - 30, 0):m.end() + 10] for m in JAPANESE.finditer(text)})
    assert not found, found[:10]
