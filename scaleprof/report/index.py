"""index.html beside many studies: one line per study, linking its report (offline, no JavaScript)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from scaleprof.telemetry.store import atomic_write_text


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if key == "best_throughput" and isinstance(value, float):
        return f"{value:,.0f} samples/s ({html.escape(row.get('best_placement', ''))})"
    if key == "efficiency" and isinstance(value, float):
        return f"{100 * value:.0f}% at {row.get('efficiency_workers')} workers"
    return "–" if value is None or value == "" else html.escape(str(value))


def render_index(root: Path, rows: list[dict[str, Any]]) -> Path:
    """Write `root/index.html` listing the studies (links relative to it) and return its path."""
    body = []
    for row in rows:
        name = html.escape(row["study"])
        target = Path(row["path"]).resolve()
        try:
            href = (target / "report.html").relative_to(root.resolve()).as_posix()
        except ValueError:
            href = (target / "report.html").as_uri()
        link = f'<a href="{html.escape(href)}">{name}</a>' if row.get("report") else name
        status = f"{row.get('ok', 0)} ok, {row.get('skipped', 0)} skipped, {row.get('failed', 0)} failed"
        for extra in ("unmeasured", "unfinished"):
            if row.get(extra):
                status += f", {row[extra]} {extra}"
        problem = f" <b>({html.escape(row['problem'])})</b>" if row.get("problem") else ""
        body.append(
            f"<tr><td>{link}{problem}</td><td>{_cell(row, 'experiment')}</td><td>{_cell(row, 'created')}</td>"
            f"<td>{status}</td><td>{_cell(row, 'best_throughput')}</td><td>{_cell(row, 'efficiency')}</td></tr>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>scaleprof studies in {html.escape(root.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }}
</style></head><body>
<h1>scaleprof studies in {html.escape(str(root))}</h1>
<table><thead><tr><th>study</th><th>experiment</th><th>created</th><th>runs</th><th>fastest</th>
<th>efficiency at the most workers</th></tr></thead>
<tbody>{"".join(body)}</tbody></table>
</body></html>
"""
    path = root / "index.html"
    atomic_write_text(path, page)
    return path
