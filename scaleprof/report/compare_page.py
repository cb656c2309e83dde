"""`scaleprof compare A B --html FILE`: the comparison as a page beside the reports (offline, sortable)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from scaleprof.report.render import SORT_JS
from scaleprof.telemetry.store import atomic_write_text


def render_compare(path: Path, title: str, rows: list[dict[str, object]], note: str, a: Path, b: Path) -> Path:
    esc = html.escape
    table = pd.DataFrame(rows).to_html(index=False, escape=True, border=0, classes="runs sortable")
    links = " · ".join(
        f'<a href="{esc((d / "report.html").resolve().as_uri())}">{esc(label)}: {esc(d.name)}</a>'
        for label, d in (("A (baseline)", a), ("B", b))
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table.runs {{ border-collapse: collapse; font-size: 0.9em; }}
table.runs th, table.runs td {{ padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: right; }}
table.sortable th {{ cursor: pointer; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p>{links}</p>
{table}
<p>{esc(note)}</p>
<script type="text/javascript">
{SORT_JS}
</script>
</body></html>
"""
    atomic_write_text(path, page)
    return path
