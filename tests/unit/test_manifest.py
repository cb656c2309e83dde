"""The manifest as a type (scaleprof.manifest): a study an older scaleprof wrote still reads and renders, and a
manifest that is JSON but not one is reported as damaged, naming the field."""

import json
from pathlib import Path

import pytest

from scaleprof.analysis.summarize import summarize
from scaleprof.manifest import Manifest
from scaleprof.report.notes import environment_lines, study_notes
from scaleprof.report.render import render_summary_md
from scaleprof.telemetry.store import StoreError, StudyStore
from tests.unit.study_data import make_study

# What the first scaleprof (53d7b05, execution/manifest.py and runner.py of that commit) wrote for a smoke
# study: its experiment resolved by that version's config, its data record, packages, host and Ray facts, and
# the telemetry counts added at the end; no pricing, models, code, toolchain, ray.autoscaler/job, data.split
# or data.loader, and an experiment without the settings added since (precision, optimizer, profile, ...).
OLD_MANIFEST = Path(__file__).parent / "data" / "old_manifest.json"


@pytest.fixture
def old_study(tmp_path) -> StudyStore:
    """The hand-made study's runs and events under the old manifest."""
    store = make_study(tmp_path / "old")
    (store.root / "manifest.json").write_bytes(OLD_MANIFEST.read_bytes())
    return store


def test_an_old_manifest_reads_with_defaults_for_what_it_lacks(old_study):
    stored = json.loads(OLD_MANIFEST.read_text())
    assert not {"pricing", "models", "code", "toolchain"} & set(stored)  # what newer versions added
    assert "precision" not in stored["experiment"]["train"] and "profile" not in stored["experiment"]
    manifest = old_study.manifest()
    assert manifest.study_id == "smoke-20261129-002041" and manifest.seed == 0
    assert manifest.experiment.name == "smoke" and manifest.experiment.train.lr == 0.01  # its own settings
    assert manifest.experiment.train.precision == "fp32" and manifest.experiment.evaluation.min_steady_steps == 30
    assert manifest.data.split_sizes == {"train": 1257, "val": 270, "test": 270} and manifest.data.split is None
    assert manifest.ray.nodes[0].hostname == "laptop" and manifest.ray.autoscaler is None
    assert manifest.telemetry is not None and manifest.telemetry.events_written == 412
    assert manifest.telemetry.aggregators == 1 and manifest.gpu is None
    assert manifest.pricing == {} and manifest.models == [] and manifest.toolchain is None
    assert manifest.raw == stored  # as on disk, not today's resolution of it


def test_an_old_study_renders_its_notes_and_environment(old_study):
    tables = summarize(old_study)
    notes = study_notes(tables)
    assert notes[1].startswith("Learning rate: a fixed learning rate 0.01 on every placement (no scaling rule)")
    assert "No node type was priced (set cost.node_type): no cost figures." in notes
    telemetry = "Telemetry as written: 412 events stored from 3 workers, 0 sequence gaps, 0 resent events dropped"
    assert any(note.startswith(telemetry) for note in notes)
    assert environment_lines(tables.manifest)[:2] == [
        "CPU: Intel(R) Xeon(R) CPU @ 2.20GHz",
        "Ray cluster: 2 CPU, 0 GPU, 4.4 GiB memory on 1 node(s)",
    ]
    summary = render_summary_md(tables)
    assert summary.startswith("# scaleprof study smoke-20261129-002041\n")
    assert "- Experiment sha256: 48bd750ec4d63f3d; split sha256: train 881fa08465f96785" in summary


def test_the_models_record_before_sweeps_was_a_dict_by_label():
    stored = json.loads(OLD_MANIFEST.read_text()) | {
        "models": {"small-cnn": {"flops_per_sample": 1.5e6, "parameters": 20_000}},  # as 5b78787 wrote it
        "pricing": {},
    }
    assert Manifest.model_validate(stored).models == stored["models"]


def test_a_field_newer_than_this_scaleprof_is_kept():
    stored = json.loads(OLD_MANIFEST.read_text()) | {"from_the_future": {"x": 1}}
    stored["data"]["new_fact"] = 2
    manifest = Manifest.model_validate(stored)
    assert manifest.raw["from_the_future"] == {"x": 1} and manifest.data.model_extra == {"new_fact": 2}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["telemetry"].update(events_written="many"), "damaged: telemetry.events_written: "),
        (lambda m: m["experiment"]["train"].update(epochs=0), "damaged: experiment.train.epochs: "),
        (lambda m: m["experiment"].update(placements=[]), "damaged: experiment.placements: "),
        (lambda m: m["ray"].update(nodes={}), "damaged: ray.nodes: "),
    ],
)
def test_json_that_is_not_a_manifest_is_damaged_naming_the_field(old_study, change, message):
    assert message in refusal(old_study, change)


def refusal(old_study, change) -> str:
    """What reading the old study says once `change` is made to its stored manifest (it must refuse it)."""
    stored = json.loads(OLD_MANIFEST.read_text())
    change(stored)
    (old_study.root / "manifest.json").write_text(json.dumps(stored))
    with pytest.raises(StoreError) as err:
        old_study.manifest()
    assert err.value.path.name == "manifest.json"
    return str(err.value)


def test_a_value_this_scaleprof_refuses_in_another_versions_study_names_that_version(old_study):
    def change(m):
        m["experiment"]["train"]["epochs"] = 0
        m["packages"] = {"scaleprof": "0.0.1"}

    said = refusal(old_study, change)
    assert "damaged: experiment.train.epochs: " in said and "written by scaleprof 0.0.1: if it allowed this" in said


def test_a_setting_this_scaleprof_does_not_know_names_the_version_that_wrote_it(old_study):
    def change(m):
        m["experiment"]["train"]["new_knob"] = 3
        m["packages"] = {"scaleprof": "9.9.9"}

    said = refusal(old_study, change)
    assert "experiment.train.new_knob: a setting scaleprof" in said and "written by scaleprof 9.9.9" in said


@pytest.mark.parametrize(
    "spec",
    [
        {"model": {"name": "mlp"}, "data": {"name": "digits"}},
        {"task": "language-modeling", "model": {"name": "transformer"},
         "data": {"name": "synthetic-tokens", "size": 64, "seq_len": 8, "vocab_size": 16}},
        {"train": {"loop": "my_loop:train"}},
    ],
)  # fmt: skip
def test_what_the_driver_writes_today_is_declared_by_the_model(spec):
    """The parts of collect_manifest that need no Ray, read back: every field they write is one the model
    names (none lands in its extras), so a field added to the writer and not here fails this test."""
    from scaleprof.config import Experiment
    from scaleprof.execution.manifest import data_record, package_versions
    from scaleprof.pricing import load_pricing
    from scaleprof.versions import toolchain
    from scaleprof.workloads.data import load_dataset

    experiment = Experiment.model_validate({"name": "today", "placements": [{"name": "cpu-1", "workers": 1}], **spec})
    data = load_dataset(experiment.data, experiment.seed) if experiment.data is not None else None
    price = next(iter(load_pricing(Path(__file__).parents[2] / "clusters" / "pricing.csv").values()))
    stored = {
        "experiment": experiment.resolved(),
        "experiment_sha256": experiment.digest(),
        "seed": experiment.seed,
        "data": data_record(experiment, data),
        "packages": package_versions(),
        "toolchain": toolchain(),
        "pricing": {price.node_type: price.model_dump()},  # as the command line hands them to the runner
    }
    manifest = Manifest.model_validate(stored)
    assert manifest.experiment == experiment and manifest.data.model_extra == {} and not manifest.model_extra
    assert manifest.pricing[price.node_type] == price and manifest.raw == stored
    if experiment.task == "language-modeling":
        assert manifest.data.loss_floor_nats is not None and manifest.data.split == "random, seeded"
