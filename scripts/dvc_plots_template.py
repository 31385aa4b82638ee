"""Write DVC's plots page template with Vega, Vega-Lite and vega-embed inlined (`make setup` runs this).

`dvc plots show` fills the template named by `.dvc/config` › plots.html_template. DVC's own page loads the three
libraries from a CDN, so offline (or on an intranet) it is a blank page; this one carries them (from node_modules/,
pinned by package-lock.json), has no {scripts} placeholder (so DVC adds no CDN tags) and a Content-Security-Policy that
allows no request at all. vega-embed is told to draw SVG (its default is a canvas), so a test can find the chart.

    python scripts/dvc_plots_template.py [--root DIR] [--out build/dvc-plots-template.html]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

LIBRARIES = ("vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js")

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:">
{refresh_tag}
<title>koe — DVC plots</title>
<style>table {{ border-spacing: 15px; }} body {{ font-family: sans-serif; }}</style>
{libraries}
<script>
// DVC's plot divs call vegaEmbed(id, spec): draw SVG, without the actions menu (it links to the online editor).
(function () {{
  var embed = window.vegaEmbed;
  window.vegaEmbed = function (el, spec, opt) {{
    return embed(el, spec, Object.assign({{renderer: "svg", actions: false}}, opt || {{}}));
  }};
}})();
</script>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def build(root: Path) -> str:
    scripts = []
    for rel in LIBRARIES:
        js = (root / "node_modules" / rel).read_text(encoding="utf-8")
        # "</script" inside the code would end the element early; "<\\/script" means the same in any JS string
        js = js.replace("</script", "<\\/script")
        scripts.append(f"<!-- {rel} -->\n<script>\n{js}\n</script>")
    # {refresh_tag} stays for DVC (`dvc plots show` never sets it; an empty string then)
    return PAGE.format(libraries="\n".join(scripts), refresh_tag="{refresh_tag}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    out = args.out or args.root / "build" / "dvc-plots-template.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(build(args.root), encoding="utf-8")
    os.replace(tmp, out)
    print(f"DVC plots template: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
