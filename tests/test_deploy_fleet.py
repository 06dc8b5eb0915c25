"""`shaver fleet`: one artifact per device class, the manifest, unmet budgets, reruns, and
the fleet file's bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from shaver.attribution.result import Attribution
from shaver.cli import main
from shaver.deploy import fleet as fleet_mod
from shaver.deploy.artifact import export_artifact
from shaver.deploy.embedding import compressed_model
from shaver.deploy.fleet import file_sha256, fleet
from shaver.deploy.fleet_spec import DeviceClass, FleetError, load_fleet, parse_fleet
from shaver.pruning.api import prune
from shaver.runtime import load_artifact
from shaver.runtime.tiered import TierSpec
from shaver.table.size import feature_map_metadata, plan_bytes
from shaver.train.checkpoint import load_run, open_run_dataset
from shaver.train.evaluation import evaluate
from test_pruning_util import FIELD_DIMS, saved_run_with_random_phi

N = sum(FIELD_DIMS)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    return saved_run_with_random_phi(root)


def _floor(run_dir, head="fp32", values="fp32"):
    """(model, smallest artifact at ``head`` and ``values``: every entry or none pruned)
    counting the feature map the fleet stores and the recalibration every chosen cut carries."""
    run = load_run(run_dir, device="cpu")
    meta = feature_map_metadata(open_run_dataset(run))
    shape = tuple(run.model.embedding.weight.shape)
    return run.model, min(plan_bytes(run.model, t, [TierSpec(values)], head_dtype=head,
                                     metadata=meta, calibrated=True)[0]
                          for t in (np.zeros(shape, np.uint8), np.ones(shape, np.uint8)))


def _write_fleet(path, classes):
    path.write_text(yaml.safe_dump({"classes": classes}))
    return path


def test_fleet_writes_every_class_within_its_budget(run_dir, tmp_path):
    _, floor = _floor(run_dir)
    _, floor_int8 = _floor(run_dir, "int8", "int8")
    classes = [{"name": "big", "bytes": floor + 60},
               {"name": "small", "bytes": floor_int8 + 300, "values": "int8", "head": "int8",
                "format": "both"},
               {"name": "tiny", "bytes": f"{floor_int8 - 1}B", "values": "int8", "head": "int8"}]
    spec = _write_fleet(tmp_path / "fleet.yaml", classes)
    result = fleet(run_dir, run_dir / "attribution-codebook.safetensors", spec, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "manifest.json").read_text())
    by_name = {c["name"]: c for c in doc["classes"]}
    assert [c["name"] for c in doc["classes"]] == ["big", "small", "tiny"]
    dataset = open_run_dataset(load_run(run_dir, device="cpu"))
    for name, budget in (("big", floor + 60), ("small", floor_int8 + 300)):
        entry = by_name[name]
        assert entry["status"] == "written" and entry["row"]["method"] == "auto"
        path = tmp_path / "out" / entry["file"]
        assert entry["bytes"] == path.stat().st_size == entry["predicted_bytes"] <= budget
        assert entry["bytes"] == entry["row"]["artifact_bytes"]
        assert entry["sha256"] == file_sha256(path)
        written = compressed_model(path)  # the metrics are the written artifact's
        for split in ("val", "test"):
            got = evaluate(written, dataset, split)
            assert entry["metrics"][split] == {"auc": float(got["auc"]),
                                               "logloss": float(got["logloss"])}
        art = load_artifact(path)
        assert art.info["kept"] == entry["row"]["kept"]
        assert art.info["winner"] == entry["row"]["winner"]
        assert art.calibration is not None
    small = load_artifact(tmp_path / "out" / "small.shaver")
    assert small.head_dtype == "int8" and by_name["small"]["row"]["head_dtype"] == "int8"
    assert by_name["small"]["row"]["plan"].startswith("int8")
    assert [f["format"] for f in by_name["small"]["files"]] == ["shaver", "onnx"]
    assert (tmp_path / "out" / "small.onnx").is_file()
    tiny = by_name["tiny"]
    assert tiny["status"] == "unmet"
    assert tiny["reason"] == (f"budget bytes={floor_int8 - 1} is below the smallest artifact "
                              f"this model can have at the allowed precisions ({floor_int8} "
                              f"bytes, head int8)")
    assert not (tmp_path / "out" / "tiny.shaver").exists()
    assert result.skipped == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "big.shaver", "manifest.json", "small.onnx", "small.shaver"]


@pytest.mark.parametrize(("values", "head"), [(None, None), ("int8", "int8"), ("fp32", None)])
def test_a_class_is_the_prune_cut_byte_for_byte(run_dir, tmp_path, values, head):
    """One budget, one answer: a fleet class writes the artifact that shaver.prune() with the
    same precisions exports."""
    _, floor = _floor(run_dir, "int8")
    cls = {"name": "c", "bytes": floor + 200}
    cls.update({k: v for k, v in (("values", values), ("head", head)) if v is not None})
    spec = _write_fleet(tmp_path / "fleet.yaml", [cls])
    fleet(run_dir, run_dir / "attribution-codebook.safetensors", spec, tmp_path / "out",
          evaluate=False)
    run = load_run(run_dir, device="cpu")
    attr = Attribution.load(run_dir / "attribution-codebook.safetensors")
    (result,) = prune(run.model, attr, [f"bytes={floor + 200}"], dataset=open_run_dataset(run),
                      values=None if values is None else [values],
                      heads=None if head is None else [head])
    export_artifact(result, tmp_path / "api.shaver")
    assert file_sha256(tmp_path / "api.shaver") == file_sha256(tmp_path / "out" / "c.shaver")


def test_a_class_may_ask_for_finetuning_and_the_manifest_records_it(run_dir, tmp_path):
    _, floor = _floor(run_dir, "int8")
    classes = [{"name": "ft", "bytes": floor + 200, "head": "int8", "finetune_epochs": 1},
               {"name": "once", "bytes": floor + 200, "head": "int8"}]
    spec = _write_fleet(tmp_path / "fleet.yaml", classes)
    fleet(run_dir, run_dir / "attribution-codebook.safetensors", spec, tmp_path / "out",
          evaluate=False)
    doc = json.loads((tmp_path / "out" / "manifest.json").read_text())
    ft, once = doc["classes"]
    assert ft["class"]["finetune_epochs"] == 1 and "finetune_epochs" not in once["class"]
    assert ft["row"]["finetuned"] is True and ft["row"]["finetune_epochs"] == 1
    assert ft["finetune"]["epochs"] == 1 and set(ft["finetune"]["val"]) == {"before", "after"}
    assert once["row"]["finetuned"] is False and "finetune" not in once
    # same plan, same bytes: fine-tuning changes the values, never the size
    assert ft["row"]["plan"] == once["row"]["plan"]
    assert ft["bytes"] == once["bytes"] == ft["predicted_bytes"] <= floor + 200
    assert load_fleet(spec)[0].finetune_epochs == 1


def test_rerun_completes_only_missing_classes(run_dir, tmp_path, monkeypatch):
    _, floor = _floor(run_dir)
    spec = _write_fleet(tmp_path / "fleet.yaml", [{"name": "a", "bytes": floor + 3000},
                                                  {"name": "b", "bytes": floor + 1000}])
    args = (run_dir, run_dir / "attribution-codebook.safetensors", spec, tmp_path / "out")
    first = fleet(*args, evaluate=False)
    shas = {c["name"]: c["sha256"] for c in first.classes}
    # an interrupted run: class b was never written, the manifest lists only a
    (tmp_path / "out" / "b.shaver").unlink()
    built = []
    real = fleet_mod._build_class
    monkeypatch.setattr(fleet_mod, "_build_class",
                        lambda cuts, cls, *a: built.append(cls.name) or real(cuts, cls, *a))
    again = fleet(*args, evaluate=False)
    assert built == ["b"] and again.skipped == ["a"]
    assert {c["name"]: c["sha256"] for c in again.classes} == shas
    # a corrupted file is rebuilt too; an interruption mid-class leaves no partial file
    (tmp_path / "out" / "a.shaver").write_bytes(b"junk")
    built.clear()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("shaver.runtime.container.zlib.crc32", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fleet(*args, evaluate=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a.shaver", "b.shaver", "manifest.json"]
    monkeypatch.undo()
    third = fleet(*args, evaluate=False)
    assert third.skipped == ["b"]
    assert {c["name"]: c["sha256"] for c in third.classes} == shas


def test_cli_fleet(run_dir, tmp_path, capsys):
    _, floor = _floor(run_dir)
    spec = _write_fleet(tmp_path / "fleet.yaml", [{"name": "one", "bytes": floor + 500,
                                                   "head": "fp16"},
                                                  {"name": "none", "bytes": 10}])
    assert main(["fleet", "--run", str(run_dir), "--fleet", str(spec), "--out",
                 str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "1 classes written, 1 unmet (none); 0 of them reused from an earlier run" in out
    assert main(["fleet", "--run", str(run_dir), "--fleet", str(tmp_path / "nope.yaml"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "nope.yaml: cannot read the fleet file" in capsys.readouterr().err


BAD = [
    ({"classes": [{"name": "a", "bytes": "1MiB", "colour": "red"}]},
     "classes[0]: unknown key 'colour' (expected name, bytes, values, head, format, "
     "finetune_epochs)"),
    ({"classes": [{"name": "a", "bytes": 10, "finetune_epochs": 0}]},
     "classes[0] (a): finetune_epochs must be a positive integer, got 0"),
    ({"classes": [{"name": "a", "bytes": 10, "finetune_epochs": True}]},
     "classes[0] (a): finetune_epochs must be a positive integer, got True"),
    ({"classes": [{"name": "a", "bytes": -5}]},
     "classes[0] (a): bytes: a bytes budget must be > 0, got -5"),
    ({"classes": [{"name": "a", "bytes": "-2MiB"}]},
     "classes[0] (a): bytes: cannot read a byte size from '-2MiB'"),
    ({"classes": [{"name": "a", "bytes": "lots"}]},
     "classes[0] (a): bytes: cannot read a byte size from 'lots'"),
    ({"classes": [{"name": "a", "bytes": 1.5}]},
     "classes[0] (a): bytes: expected a byte size such as 2MiB or 500000, got 1.5"),
    ({"classes": [{"name": "a", "bytes": "1MiB"}, {"name": "a", "bytes": "2MiB"}]},
     "classes[1]: duplicate class name 'a'"),
    ({"classes": [{"name": "a"}]}, "classes[0] (a): missing key 'bytes'"),
    ({"classes": [{"name": "a/b", "bytes": 10}]}, "classes[0]: name must be a string"),
    ({"classes": [{"name": "a", "bytes": 10, "values": "int3"}]},
     "classes[0] (a): values must be one of fp32, fp16, int8, int4, int2, got 'int3'"),
    ({"classes": [{"name": "a", "bytes": 10, "head": "bf16"}]},
     "classes[0] (a): head must be one of fp32, fp16, int8, got 'bf16'"),
    ({"classes": [{"name": "a", "bytes": 10, "format": "tflite"}]},
     "classes[0] (a): format must be one of shaver, onnx, both, got 'tflite'"),
    ({"classes": ["a"]}, "classes[0]: a class must be a mapping"),
    ({"classes": []}, "'classes' must be a non-empty list"),
    ({"devices": []}, "expected a mapping with a 'classes:' list"),
    ({"classes": [{"name": "a", "bytes": 10}], "extra": 1}, "unknown key 'extra'"),
]


@pytest.mark.parametrize(("doc", "message"), BAD)
def test_bad_fleet_files_are_refused(tmp_path, doc, message):
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_fleet_file_parses_units_and_defaults(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("classes:\n  - {name: phone, bytes: 2MiB}\n  - {name: box, bytes: 500000,"
                    " values: int8, head: fp16, format: onnx}\n")
    classes = load_fleet(path)
    assert classes == [DeviceClass("phone", 2 << 20), DeviceClass("box", 500000, "int8", "fp16",
                                                                  "onnx")]
    assert (classes[0].values, classes[0].head) == (None, None)  # the chooser picks
    path.write_text("classes: [\n")
    with pytest.raises(FleetError, match="not valid YAML"):
        load_fleet(path)
    with pytest.raises(FleetError, match="duplicate class name 'x'"):
        fleet_mod._classes([DeviceClass("x", 10), DeviceClass("x", 20)])
    with pytest.raises(FleetError, match="expected a fleet file, a fleet document"):
        fleet_mod._classes([1])
    assert parse_fleet({"classes": [{"name": "a", "bytes": 7}]})[0].bytes == 7


def test_a_fleet_needs_a_dataset(run_dir, tmp_path):
    model = load_run(run_dir, device="cpu").model
    attr = Attribution.load(run_dir / "attribution-codebook.safetensors")
    with pytest.raises(FleetError, match="chooses every class's cut on the validation split"):
        fleet_mod.run_fleet(model, attr, [DeviceClass("a", 10**6)], tmp_path)
    assert not any(tmp_path.iterdir())


def test_report_renders_the_fleet_table(run_dir, tmp_path, capsys):
    _, floor = _floor(run_dir)
    spec = _write_fleet(tmp_path / "fleet.yaml", [{"name": "ok", "bytes": floor + 60},
                                                  {"name": "no", "bytes": 10}])
    fleet(run_dir, run_dir / "attribution-codebook.safetensors", spec, tmp_path / "out")
    assert main(["report", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "report.html").read_text()
    assert '<h2 id="fleet">Device fleet</h2>' in page
    assert "<td class=l>ok</td>" in page and "<td class=l>unmet</td>" in page
    assert "below the smallest artifact" in page and "ok.shaver" in page
    # the written class sits on the accuracy-vs-size figure; nothing empty is rendered
    assert '<h2 id="tradeoff">' in page and '<h2 id="results">' in page
    for empty in ("attribution", "fields", "timings"):
        assert f'<h2 id="{empty}">' not in page
    assert "No result rows" not in page and "was recorded" not in page
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{}")
    assert main(["report", str(tmp_path / "bad")]) == 2
    assert "not a shaver fleet manifest" in capsys.readouterr().err


def test_bench_fleet_times_a_random_criteo_shaped_model(tmp_path, capsys):
    spec = _write_fleet(tmp_path / "fleet.yaml", [{"name": "a", "bytes": "3MiB"},
                                                  {"name": "b", "bytes": "1500KiB",
                                                   "values": "int8", "head": "int8"},
                                                  {"name": "c", "bytes": 1000}])
    assert main(["bench", "--fleet", str(spec), "--rows", "20000", "--repeats", "1",
                 "--out", str(tmp_path / "bench")]) == 0
    out = capsys.readouterr().out
    assert "new budget list -> all artifacts + manifest written" in out
    assert "baseline, each class alone" in out and "c              unmet" in out
    figures = json.loads((tmp_path / "bench" / "fleet_bench.json").read_text())
    assert figures["classes"] == 3 and figures["fleet_seconds"] > 0
    assert [c["status"] for c in figures["manifest"]] == ["written", "written", "unmet"]
    assert (tmp_path / "bench" / "report.html").is_file()


def test_fleet_document_of_an_unreadable_manifest(tmp_path):
    from shaver.report.fleet_table import fleet_document
    from shaver.report.schema import ReportError

    with pytest.raises(ReportError, match="cannot read the fleet manifest"):
        fleet_document(tmp_path / "manifest.json")


def test_another_attribution_rebuilds_every_class(run_dir, tmp_path):
    _, floor = _floor(run_dir)
    spec = _write_fleet(tmp_path / "fleet.yaml", [{"name": "a", "bytes": floor + 60}])
    attr = Attribution.load(run_dir / "attribution-codebook.safetensors")
    fleet(run_dir, run_dir / "attribution-codebook.safetensors", spec, tmp_path / "out",
          evaluate=False)
    attr.phi = -attr.phi.flip(0)
    attr.save(tmp_path / "other.safetensors")
    again = fleet(run_dir, tmp_path / "other.safetensors", spec, tmp_path / "out",
                  evaluate=False)
    assert again.skipped == []
    same = fleet(run_dir, tmp_path / "other.safetensors", spec, tmp_path / "out",
                 evaluate=False)
    assert same.skipped == ["a"]
