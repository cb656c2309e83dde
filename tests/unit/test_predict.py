"""`scaleprof predict`: each figure says, in its own row, what it rests on; a law outside its meaning
gives no figure at all."""

import json

from scaleprof import cli

from .study_data import make_study


def test_each_prediction_row_carries_its_caveats(tmp_path, capsys):
    store = make_study(tmp_path / "study")  # cpu-1 and cpu-2, both 8 steady steps (under the floor of 30)
    assert cli.main(["predict", str(store.root), "--workers", "64", "--json"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out) if r["method"] == "scaling law"]
    assert row["valid"] and row["extrapolated"] and row["throughput"] > 0
    assert row["worker_counts"] == 2 and row["low_confidence_placements"] == "cpu-1, cpu-2"
    assert "from 2 worker counts" in row["caveats"] and "cpu-1 low confidence" in row["caveats"]
    assert cli.main(["predict", str(store.root), "--workers", "64"]) == 0
    out = capsys.readouterr().out.split("scaling law: predictions")[1]  # after the physics model's table
    line = next(line for line in out.splitlines() if "│ 64 " in line or " 64 │" in line)
    assert "2 worker counts" in line  # beside the figure, not in a note below the table


def test_a_law_outside_its_meaning_is_refused_with_its_reason(tmp_path, capsys):
    """2 workers at 80 samples/s against one at 200: Amdahl's α = 2 x 200 / 80 - 1 = 4."""
    store = make_study(tmp_path / "study", two_worker_epoch_s=5.0)
    for extra in ([], ["--json"]):
        code = cli.main(["predict", str(store.root), "--workers", "64", *extra])
        out = capsys.readouterr()
        text = out.out + out.err
        assert code == 2 and "α = 4.00" in text and "Traceback" not in text, text
        assert "64" not in out.out  # no extrapolated number printed
