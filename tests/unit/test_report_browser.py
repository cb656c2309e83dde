"""report.html in a real browser: headless Chromium (Debian's `chromium`, installed by .ci/run) loads the
offline file, runs its inline Vega bundle, and every chart becomes an SVG with nothing on the console."""

import re
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run does)")
# As the machine's notes say: no network, no background connections, a fresh profile.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000"]  # fmt: skip


def test_every_chart_renders_in_chromium_without_console_messages(study, tmp_path):
    _, _, report = study
    assert CHROMIUM is not None  # pytestmark skips the module without it
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    charts = re.split(r'id="chart-(\d+)"', dom)[1:]
    assert len(charts) >= 2 * 8, "the report should hold a chart per topic"
    for number, body in zip(charts[::2], charts[1::2]):
        assert "<svg" in body.split('id="chart-')[0], f"chart {number} did not render"
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # no Vega warning, no JavaScript error
    assert 'id="findings-list"' in dom and "Fastest:" in dom  # the answer comes first
