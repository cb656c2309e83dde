"""Render a study: report.html (self-contained, inline JS, works offline), PNG/SVG charts, summary.md.

Everything comes from `StudyTables` (built from the store alone). Every string from the study is
escaped, and chart data is embedded as JSON with '<' escaped, so nothing in a name can run.
"""

from __future__ import annotations

import html
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from scaleprof.analysis.findings import Findings
from scaleprof.analysis.summarize import StudyTables
from scaleprof.manifest import Manifest
from scaleprof.report.charts import all_charts
from scaleprof.report.findings_text import findings_sentences
from scaleprof.report.notes import environment_lines, node_facts, study_notes
from scaleprof.report.tables import COLUMN_HELP, extra_tables, markdown_table, topic_tables
from scaleprof.telemetry.store import atomic_write_bytes, atomic_write_text


def _with_help(table_html: str) -> str:
    for label, text in COLUMN_HELP.items():
        table_html = table_html.replace(
            f"<th>{html.escape(label)}</th>", f'<th title="{html.escape(text)}">{html.escape(label)}</th>'
        )
    return table_html


def _safe_json(value: Any) -> str:
    # '<' escaped so no string in the data can close the <script> element.
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _vl_version() -> str:
    from altair.utils._importers import vl_version_for_vl_convert

    return vl_version_for_vl_convert()


def _vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one inline script (so the report works offline). vl-convert
    takes about 2 s to bundle them, so the bundle is kept in the user's cache, keyed by both versions."""
    import vl_convert as vlc

    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cached = cache_root / "scaleprof" / f"vega-bundle-{vlc.__version__}-{_vl_version()}.js"  # type: ignore[attr-defined]
    try:
        return cached.read_text(encoding="utf-8")
    except OSError:
        pass
    bundle = vlc.javascript_bundle(vl_version=_vl_version())  # type: ignore[call-arg]  # snippet defaults to None
    try:
        atomic_write_text(cached, bundle)
    except OSError:
        pass  # no writable cache: bundle again next time
    return bundle


def _models(manifest: Manifest) -> str:
    models = manifest.experiment.model_list
    return ", ".join(m.label if not m.factory else f"{m.label} ({m.factory})" for m in models)


def _splits(manifest: Manifest) -> str:
    sizes = manifest.data.split_sizes
    if not sizes:
        return "split by the training loop"
    return ", ".join(f"{name} {n}" for name, n in sizes.items()) + " samples"


# Click a column heading of a `table.sortable` to sort by it: numbers as numbers, "–" last; again to reverse.
SORT_JS = """// Click a column heading to sort a table by it (numbers as numbers, "–" last); click again to reverse.
document.querySelectorAll("table.sortable").forEach(table => {
  table.querySelectorAll("thead th").forEach((th, col) => th.addEventListener("click", () => {
    const body = table.tBodies[0], up = th.dataset.dir !== "up";
    const key = row => {
      const text = row.cells[col].textContent.trim(), num = parseFloat(text.replace(/[,%$]/g, ""));
      return text === "–" || text === "" ? null : (isNaN(num) ? text : num);
    };
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === null) return 1; if (y === null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
    });
    th.dataset.dir = up ? "up" : "down";
    rows.forEach(row => body.appendChild(row));
  }));
});"""


def render_html(tables: StudyTables, charts: dict[str, dict[str, Any]]) -> str:
    """The report page; `charts` are Vega-Lite specs (chart.to_dict()) in reading order."""
    m = tables.manifest
    esc = html.escape
    title = f"scaleprof study {m.study_id}"
    found = "".join(f"<li>{esc(n)}</li>" for n in findings_sentences(tables))
    notes = "".join(f"<li>{esc(n)}</li>" for n in study_notes(tables))
    env = "".join(f"<li>{esc(line)}</li>" for line in environment_lines(m))
    env += "".join(f"<li>{esc(head)}<pre>{esc(body)}</pre></li>" for head, body in node_facts(tables.workers))
    table = "".join(
        f'<h3 id="runs-{title.lower()}">{esc(title)}</h3>'
        + _with_help(frame.to_html(index=False, escape=True, border=0, classes="runs sortable"))
        for title, frame in topic_tables(tables.runs)
    )
    sections = [("findings", "Findings"), ("runs", "Runs")]
    extra = ""
    for i, (heading, frame) in enumerate(extra_tables(tables)):
        sections.append((f"table-{i}", heading))
        extra += f'<h2 id="table-{i}">{esc(heading)}</h2>\n' + frame.to_html(
            index=False, escape=True, border=0, classes="runs sortable"
        )
    sections += [("notes", "How to read this"), ("charts", "Charts"), ("environment", "Environment")]
    toc = " · ".join(f'<a href="#{anchor}">{esc(label)}</a>' for anchor, label in sections)
    divs = "".join(f'<section><div class="chart" id="chart-{i}"></div></section>' for i in range(len(charts)))
    specs = _safe_json(list(charts.values()))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1320px; }}
table.runs {{ border-collapse: collapse; font-size: 0.9em; }}
table.runs th, table.runs td {{ padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: right; }}
section {{ margin: 1.5em 0; }}
nav {{ font-size: 0.9em; margin: 1em 0; }}
div.charts {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(580px, 1fr)); gap: 0 1.5em; }}
div.charts section {{ overflow-x: auto; }}
#findings li {{ margin: 0.3em 0; }}
table.sortable th {{ cursor: pointer; }}
table.sortable th:hover {{ text-decoration: underline; }}
</style>
<script type="text/javascript">{_vega_bundle()}</script>
</head><body>
<h1>{esc(title)}</h1>
<p>Experiment <b>{esc(m.experiment.name)}</b>, seed {esc(str(m.seed))}, model(s) {esc(_models(m))},
data {esc(str(m.data.name))} ({esc(_splits(m))}).</p>
<nav>{toc}</nav>
<h2 id="findings">Findings</h2><ul id="findings-list">{found}</ul>
<h2 id="runs">Runs</h2>
{table}
{extra}
<h2 id="notes">How to read this</h2><ul>{notes}</ul>
<h2 id="charts">Charts</h2>
<div class="charts">{divs}</div>
<h2 id="environment">Environment</h2><ul>{env}</ul>
<script type="text/javascript">
const specs = {specs};
specs.forEach((spec, i) => vegaEmbed('#chart-' + i, spec, {{"actions": false}}).catch(console.error));
{SORT_JS}
</script>
</body></html>
"""


def render_summary_md(tables: StudyTables) -> str:
    m = tables.manifest
    lines = [
        f"# scaleprof study {m.study_id}",
        "",
        "## Findings",
        "",
        *[f"- {n}" for n in findings_sentences(tables)],
        "",
    ]
    for title, frame in topic_tables(tables.runs):
        lines += [f"## Runs: {title.lower()}", "", markdown_table(frame), ""]
    for heading, frame in extra_tables(tables):
        lines += [f"## {heading}", "", markdown_table(frame), ""]
    lines += [
        *[f"- {n}" for n in study_notes(tables)],
        "",
        "## Environment",
        "",
        *[f"- {line}" for line in environment_lines(m)],
        "",
    ]
    # Free text (reasons, node types, pricing sources) is the user's: never raw HTML in a rendered markdown file.
    return "\n".join(lines).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cost_marks(found: Findings) -> dict[str, str]:
    """The cost chart's labels by run id: the findings' cheapest (quality held) and fastest."""
    marks: dict[str, str] = {}
    for name, run in (("cheapest", found.cheapest), ("fastest", found.fastest)):
        if run is not None:
            marks[run.run_id] = " + ".join(filter(None, [marks.get(run.run_id), name]))
    return marks


def render_report(study_dir: Path, tables: StudyTables, image_format: str = "png") -> Path:
    """Write report.html, charts/<name>.<png|svg> and summary.md; return the report's path."""
    charts = all_charts(
        tables.runs,
        tables.epochs,
        tables.timeline,
        tables.quality,
        tables.findings.best_run_id,
        tables.law_curves,
        tables.inference,
        tables.steps,
        tables.ledger,
        _cost_marks(tables.findings),
        tables.lateness,
        tables.ranks,
    )
    specs = {name: chart.to_dict() for name, chart in charts.items()}  # validated once, used twice
    chart_dir = study_dir / "charts"
    chart_dir.mkdir(exist_ok=True)
    import vl_convert as vlc

    def image(item: tuple[str, dict[str, Any]]) -> None:
        name, spec = item
        if image_format == "svg":
            atomic_write_text(chart_dir / f"{name}.svg", vlc.vegalite_to_svg(spec, vl_version=_vl_version()))
        else:
            atomic_write_bytes(chart_dir / f"{name}.png", vlc.vegalite_to_png(spec, vl_version=_vl_version(), scale=2))

    # vl-convert renders outside the GIL: charts render side by side on every core.
    with ThreadPoolExecutor(max_workers=min(len(specs), os.cpu_count() or 1) or 1) as pool:
        list(pool.map(image, specs.items()))
    atomic_write_text(study_dir / "summary.md", render_summary_md(tables))
    report = study_dir / "report.html"
    atomic_write_text(report, render_html(tables, specs))
    return report
