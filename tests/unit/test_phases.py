"""Where a run's wall time goes."""

import pandas as pd


def test_wall_phases_cut_the_run_at_its_marks_and_add_up_to_wall_time():

    from scaleprof.analysis.phases import WALL_PHASES, wall_phases

    lifecycle = pd.DataFrame(
        {"event": ["worker_start", "worker_start", "worker_end", "worker_end"], "time": [110.0, 111.0, 140.0, 141.5]}
    )
    epochs = pd.DataFrame({"epoch_start": [113.0, 113.2, 125.0], "epoch_time_s": [10.0, 9.0, 12.0]})
    phases = wall_phases(100.0, 143.0, lifecycle, epochs)
    assert phases == {
        "launch_s": 10.0,
        "setup_s": 3.0,
        "compile_phase_s": 0.0,
        "training_s": 24.0,
        "finish_s": 4.5,
        "teardown_s": 1.5,
    }
    assert list(phases) == list(WALL_PHASES) and sum(phases.values()) == 43.0
    assert wall_phases(100.0, None, lifecycle, epochs) == {}  # a run still running has no end mark


def test_compile_time_is_a_phase_of_its_own_taken_out_of_training():
    from scaleprof.analysis.phases import wall_phases

    lifecycle = pd.DataFrame({"event": ["worker_start", "worker_end"], "time": [110.0, 140.0]})
    # two ranks: the slowest rank's compile time per epoch counts (rank 1 compiled 6.5 s in epoch 0)
    epochs = pd.DataFrame(
        {
            "epoch": [0, 0, 1, 1],
            "epoch_start": [113.0, 113.0, 125.0, 125.0],
            "epoch_time_s": [12.0, 12.0, 12.0, 12.0],
            "compile_s": [6.0, 6.5, None, 0.5],
        }
    )
    phases = wall_phases(100.0, 141.0, lifecycle, epochs)
    assert phases["compile_phase_s"] == 7.0 and phases["training_s"] == 24.0 - 7.0
    assert sum(phases.values()) == 41.0


def test_a_runs_wait_for_resources_is_its_own_phase_outside_the_wall_time(tmp_path):
    from scaleprof.analysis.summarize import summarize
    from scaleprof.report.charts import wall_time_phases
    from scaleprof.report.notes import study_notes
    from tests.unit.study_data import make_study

    store = make_study(tmp_path / "study")
    first = store.final_run_records()["001-mlp-cpu-1-r0"].raw
    store.append_run_record({**first, "wait_s": 42.0, "ray_node_types": {"cpu2": 1}})
    tables = summarize(store)
    runs = tables.runs.set_index("placement")
    assert runs.loc["cpu-1", "wait_s"] == 42.0 and runs.loc["cpu-2", "wait_s"] == 0.0
    assert runs.loc["cpu-1", "wall_s"] == 30.0  # the wait is not in the wall time (nor its cost)
    assert runs.loc["cpu-1", "ray_node_types"] == "cpu2 x1"
    measured = {
        "launch_s": 1.0,
        "setup_s": 1.0,
        "compile_phase_s": 0.0,
        "training_s": 25.0,
        "finish_s": 1.0,
        "teardown_s": 2.0,
    }  # the handmade workers record no exit
    chart = wall_time_phases(tables.runs.assign(**measured))
    assert chart is not None
    spec = chart.to_json()
    assert "resource wait" in spec and "the wait for resources, then" in spec
    assert "001-mlp-cpu-1-r0 42 s (then ran on cpu2 x1)" in " ".join(study_notes(tables))
    plain = summarize(make_study(tmp_path / "plain")).runs.assign(**measured)
    plain_chart = wall_time_phases(plain)
    assert plain_chart is not None
    assert "resource wait" not in plain_chart.to_json()  # nobody waited: no such phase
