"""Many studies: `scaleprof ls`, the index page beside them, `--json`, and tables that concatenate."""

import json

import pandas as pd

from scaleprof import cli
from scaleprof.analysis.summarize import summarize, write_tables
from tests.unit.study_data import make_study


def two_studies(root):
    for name in ("alpha", "beta"):
        store = make_study(root / name)
        manifest = store.manifest().raw
        manifest["study_id"] = name
        store.write_manifest(manifest)
        write_tables(store, summarize(store))
    (root / "not-a-study").mkdir()
    return root


def test_ls_lists_every_study_and_writes_an_index_linking_them(tmp_path, capsys):
    root = two_studies(tmp_path)
    (root / "alpha" / "report.html").write_text("<html></html>")
    assert cli.main(["ls", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 studies in" in out and "alpha" in out and "beta" in out and "not-a-study" not in out
    assert "300 (mlp on cpu-2)" in out and "75% at 2" in out  # the hand-made study's figures
    index = (root / "index.html").read_text()
    assert '<a href="alpha/report.html">alpha</a>' in index  # relative: the folder can be moved or served
    assert "beta" in index and '<a href="beta/report.html">' not in index  # no report yet: no dead link


def test_ls_json_and_concatenated_tables_carry_the_study(tmp_path, capsys):
    root = two_studies(tmp_path)
    assert cli.main(["ls", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["study"] for r in rows} == {"alpha", "beta"}
    assert all(r["ok"] == 2 and r["skipped"] == 1 and r["best_throughput"] == 300 for r in rows)
    runs = pd.concat(pd.read_parquet(p) for p in sorted(root.glob("*/runs.parquet")))
    assert list(runs.columns[:2]) == ["study_id", "run_id"] and set(runs["study_id"]) == {"alpha", "beta"}


def test_plan_predict_and_compare_speak_json(tmp_path, capsys):
    root = two_studies(tmp_path)
    assert cli.main(["plan", "experiments/smoke.yaml", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [r["placement"] for r in plan] == ["cpu-1", "cpu-2", "gpu-1"]
    assert cli.main(["predict", str(root / "alpha"), "--workers", "4", "--json"]) == 0
    (prediction,) = [r for r in json.loads(capsys.readouterr().out) if r["method"] == "scaling law"]
    assert prediction["workers"] == 4 and prediction["throughput"] > 300
    assert cli.main(["compare", str(root / "alpha"), str(root / "beta"), "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert {r["placement"] for r in compared} == {"cpu-1", "cpu-2"}
    assert all(r["throughput_change"] == 0 for r in compared)
    page = tmp_path / "compare.html"
    assert cli.main(["compare", str(root / "alpha"), str(root / "beta"), "--html", str(page)]) == 0
    text = page.read_text()
    assert "beta against alpha" in text and 'runs sortable"' in text and "not a statistical test" in text
    assert (root / "alpha" / "report.html").resolve().as_uri() in text
