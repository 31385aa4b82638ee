"""The report page: sections shown in the notebook carry their contents-bar entry, and the executed notebook becomes
one self-contained HTML file (koe's template, the Japanese font subset embedded; no code, no script, no external
requests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.report_format import TEMPLATE_DIR, text


class Section(str):
    """An HTML fragment that is one section of the page: ``anchor`` is its id, ``title`` its entry in the
    contents bar. It is a plain string everywhere else."""

    anchor: str
    title: str

    def __new__(cls, html: str, anchor: str, title: str) -> "Section":
        obj = super().__new__(cls, html)
        obj.anchor, obj.title = anchor, title
        return obj


TOC_KEY = "koe_section"  # display-output metadata naming a section for the contents bar


def show(*items: Any) -> None:
    """Display each non-empty fragment (HTML string or chart); an absent section leaves no trace on the page.
    A ``Section`` carries its anchor and title in the output's metadata, where the page's contents bar finds them."""
    from IPython.display import HTML, display

    for item in items:
        if item is None or (isinstance(item, str) and not item.strip()):
            continue
        if isinstance(item, Section):
            display(HTML(item), metadata={TOC_KEY: {"anchor": item.anchor, "title": item.title}})
        else:
            display(HTML(item) if isinstance(item, str) else item)


def embedded_font_css(text: str) -> str:
    """@font-face with IPAexGothic cut down to the characters of this page, as a data: URL (WOFF).

    Readers without a Japanese font (a fresh Linux box, some kiosks) would otherwise see tofu; the subset keeps the
    file small and the CSP (font-src data:) allows nothing else. IPA Font License permits embedding in documents.
    """
    import base64
    import io as _io
    import logging

    import matplotlib_fontja
    from fontTools import subset

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # it logs every pruned table at INFO

    chars = {c for c in text if ord(c) > 0x7F}  # ASCII is drawn by the reader's own sans-serif
    if not chars:
        return ""
    font_path = Path(matplotlib_fontja.__file__).parent / "fonts" / "ipaexg.ttf"
    options = subset.Options()
    options.flavor = "woff"  # zlib-compressed; woff2 would need brotli
    options.layout_features = ["*"]
    font = subset.load_font(str(font_path), options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(ord(c) for c in chars))
    subsetter.subset(font)
    buf = _io.BytesIO()
    subset.save_font(font, buf, options)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<style type="text/css">@font-face {{ font-family: "KoeJP"; '
            f'src: url(data:font/woff;base64,{data}) format("woff"); }}</style>')


def contents(nb) -> list[tuple[str, str]]:
    """(anchor, title) of every section the executed notebook showed, in page order."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            entry = (o.get("metadata") or {}).get(TOC_KEY)
            if entry and entry.get("anchor") and entry.get("title"):
                out.append((str(entry["anchor"]), str(entry["title"])))
    return out


def html_page(executed_notebook: str | Path, lang: str = "ja", title: str | None = None) -> str:
    """Executed report notebook → one self-contained HTML page (koe's own template, a contents bar linking every
    section): no code, no script, no external requests."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed_notebook), as_version=4)
    # Warnings and logs are for the researcher's copy, not the stakeholder's page.
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    exporter = HTMLExporter(template_name="koe_report", extra_template_basedirs=[str(TEMPLATE_DIR)])
    exporter.language_code = lang  # <html lang=…>: screen readers and hyphenation follow it
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    resources = {"language_code": lang, "koe_title": title or nb.metadata.get("title") or "koe report",
                 "koe_toc": contents(nb), "koe_toc_label": text(lang, "contents")}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return body.replace("</head>", embedded_font_css(body) + "\n</head>", 1)
