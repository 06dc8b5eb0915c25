"""`shaver fleet`: one artifact per device class, the manifest, unmet budgets, reruns, and
the fleet file's bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from shaver.attribution.result import Attribution
from shaver.cli import main
from shaver.deploy import fleet as fleet_mod
from shaver.deploy.fleet import file_sha256, fleet
from shaver.deploy.fleet_spec import DeviceClass, FleetError, load_fleet, parse_fleet
from shaver.runtime import load_artifact
from shaver.table.size import feature_map_metadata, minimum_artifact_bytes, predict_artifact_bytes
from test_pruning_util import FIELD_DIMS, saved_run_with_random_phi

N = sum(FIELD_DIMS)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    return saved_run_with_random_phi(root)


def _floor(run_dir, values="fp32", head="fp32"):
    """(model, smallest artifact: all or nothing pruned) counting the feature map the fleet
    stores."""
    from shaver.train.checkpoint import load_run, open_run_dataset

    run = load_run(run_dir, device="cpu")
    meta = feature_map_metadata(open_run_dataset(run))
    full = np.ones(tuple(run.model.embedding.weight.shape), bool)
    return run.model, min(
        minimum_artifact_bytes(run.model, value_dtype=values, head_dtype=head, metadata=meta),
        predict_artifact_bytes(run.model, full, value_dtype=values, head_dtype=head,
                               metadata=meta))


def _write_fleet(path, classes):
    path.write_text(yaml.safe_dump({"classes": classes}))
    return path


def test_fleet_writes_every_class_within_its_budget(run_dir, tmp_path):
    model, floor = _floor(run_dir)
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
    for name, budget in (("big", floor + 60), ("small", floor_int8 + 300)):
        entry = by_name[name]
        assert entry["status"] == "written" and entry["method"] == "shapley/abs"
        path = tmp_path / "out" / entry["file"]
        assert entry["bytes"] == path.stat().st_size == entry["predicted_bytes"] <= budget
        assert entry["sha256"] == file_sha256(path)
        assert set(entry["metrics"]) == {"val", "test"}
        assert 0 <= entry["metrics"]["test"]["auc"] <= 1
        art = load_artifact(path)
        assert art.info["kept"] == entry["cut"]["kept"]
        assert (art.value_dtype, art.head_dtype) == (entry["class"]["values"],
                                                     entry["class"]["head"])
    assert [f["format"] for f in by_name["small"]["files"]] == ["shaver", "onnx"]
    assert (tmp_path / "out" / "small.onnx").is_file()
    tiny = by_name["tiny"]
    assert tiny["status"] == "unmet" and tiny["smallest_bytes"] == floor_int8
    assert "below the smallest artifact" in tiny["reason"]
    assert not (tmp_path / "out" / "tiny.shaver").exists()
    assert result.skipped == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "big.shaver", "manifest.json", "small.onnx", "small.shaver"]


@pytest.mark.parametrize("order", ["abs", "signed"])
def test_cut_is_the_prune_cut_and_the_largest_that_fits(order):
    from shaver.pruning.api import Pruner, as_scores
    from test_deploy_support import pruned_model

    model, _ = pruned_model("deepfm", keep=[1, 1, 1, 1])
    model.embedding = torch.nn.Embedding.from_pretrained(model.embedding.weight.detach())
    rng = np.random.default_rng(1)
    # ties, signed zeros and a few values in one histogram bucket
    scores = np.round(rng.standard_normal(tuple(model.embedding.weight.shape)), 2)
    scores[:3] = -0.0
    scores[3:6] = 1e-30 * rng.random((3, scores.shape[1]))
    scores = scores.astype(np.float32)
    source = fleet_mod.CutSource(model, as_scores(model, scores), None, order)
    pruner = Pruner(model, scores, order=order)
    for kept in (0, 1, 17, pruner.total // 2, pruner.total - 1, pruner.total):
        np.testing.assert_array_equal(source.ranked.mask(kept), pruner.order.mask(kept))
        per_field = np.add.reduceat(pruner.order.mask(kept).sum(1),
                                    np.r_[0, np.cumsum(model.field_dims)[:-1]])
        np.testing.assert_array_equal(source.ranked.counts(kept), per_field)
    for values, head in (("fp32", "fp32"), ("int8", "int8"), ("fp16", "int8")):
        sizes = [predict_artifact_bytes(model, pruner.order.mask(k), value_dtype=values,
                                        head_dtype=head) for k in (0, pruner.total // 3)]
        cls = DeviceClass("c", sum(sizes) // 2, values, head)
        cut = fleet_mod.best_cut(source, cls)
        pruner.value_dtype, pruner.head_dtype = values, head
        assert cut.kept == pruner.resolve(cls.budget)
        assert cut.method == f"custom/{order}" and 0 < cut.kept < pruner.total // 3
        assert cut.predicted_bytes == predict_artifact_bytes(
            model, pruner.order.mask(cut.kept), value_dtype=values, head_dtype=head) <= cls.bytes
        bigger = pruner.order.mask(cut.kept + 1)
        assert predict_artifact_bytes(model, bigger, value_dtype=values, head_dtype=head) > \
            cls.bytes


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
     "classes[0]: unknown key 'colour' (expected name, bytes, values, head, format)"),
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
     "classes[0] (a): values must be one of fp32, fp16, int8, got 'int3'"),
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
    path.write_text("classes: [\n")
    with pytest.raises(FleetError, match="not valid YAML"):
        load_fleet(path)
    with pytest.raises(FleetError, match="duplicate class name 'x'"):
        fleet_mod._classes([DeviceClass("x", 10), DeviceClass("x", 20)])
    with pytest.raises(FleetError, match="expected a fleet file, a fleet document"):
        fleet_mod._classes([1])
    assert parse_fleet({"classes": [{"name": "a", "bytes": 7}]})[0].bytes == 7


def test_evaluate_needs_a_dataset(run_dir, tmp_path):
    from shaver.train.checkpoint import load_run

    model = load_run(run_dir, device="cpu").model
    attr = Attribution.load(run_dir / "attribution-codebook.safetensors")
    with pytest.raises(FleetError, match="evaluate=True needs the dataset"):
        fleet_mod.run_fleet(model, attr, [DeviceClass("a", 10**6)], tmp_path, evaluate=True)


def test_report_renders_the_fleet_table(run_dir, tmp_path, capsys):
    _, floor = _floor(run_dir)
    spec = _write_fleet(tmp_path / "fleet.yaml", [{"name": "ok", "bytes": floor + 60},
                                                  {"name": "no", "bytes": 10}])
    fleet(run_dir, run_dir / "attribution-codebook.safetensors", spec, tmp_path / "out")
    assert main(["report", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "report.html").read_text()
    assert '<h2 id="fleet">Device fleet</h2>' in page
    assert "<td class=l>ok</td>" in page and "<td class=l>unmet</td>" in page
    assert "smallest " in page and "ok.shaver" in page
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
