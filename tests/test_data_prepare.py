"""Preparation against a brute-force per-line reference, on every preset's hand-made fixture."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from shaver.data.prepare import prepare_dataset
from shaver.data.presets import load_preset, preset_names
from shaver.data.store import SPLITS

FIX = Path(__file__).parent / "fixtures" / "data"


def ref_criteo_token(text: str) -> str:
    if text == "":
        return ""
    v = int(text)
    return "L" + str(int(math.log(v) ** 2)) if v > 2 else str(v)


def reference(path: Path, spec, ds, *, sep: str, header: bool, token_of) -> None:
    """Recompute vocabularies and ids with a plain per-line loop and compare exactly."""
    raw = path.read_text().splitlines()[1 if header else 0:]
    columns = list(spec.input.columns)
    parsed = [dict(zip(columns, line.split(sep))) for line in raw]
    split_of = {}
    for s in SPLITS:
        for r in np.load(ds.path / f"{s}_rows.npy"):
            split_of[int(r)] = s
    assert sorted(split_of) == list(range(len(parsed)))
    vocab = {}
    for f in ds.field_names:
        counts = Counter(token_of(f, parsed[r]) for r in range(len(parsed)) if split_of[r] == "train")
        fs = next(x for x in spec.fields if x.name == f)
        kept = sorted((-c, v) for v, c in counts.items() if c >= spec.min_count_of(fs))
        vocab[f] = ["__OOV__"] + [v for _, v in kept]
    assert ds.vocabularies == vocab
    for s in SPLITS:
        ids = np.asarray(ds.ids(s))
        for i, r in enumerate(np.load(ds.path / f"{s}_rows.npy")):
            local = [vocab[f].index(token_of(f, parsed[r])) if token_of(f, parsed[r]) in vocab[f][1:]
                     else 0 for f in ds.field_names]
            assert list(ids[i] - ds.offsets) == local
    freq = np.bincount(np.asarray(ds.ids("train")).ravel(), minlength=ds.num_features)
    assert np.array_equal(ds.frequencies, freq)


@pytest.mark.parametrize("min_count", [10, 3])
def test_criteo_matches_reference(tmp_path, min_count):
    from shaver.data.spec import DatasetSpec

    spec_dict = load_preset("criteo").to_dict()
    spec_dict["min_count"] = min_count
    spec = DatasetSpec.from_dict(spec_dict)
    ds = prepare_dataset(spec, FIX / "criteo_small.txt", tmp_path / "c", quiet=True)

    def token_of(f, row):
        return ref_criteo_token(row[f]) if f.startswith("I") else row[f]

    reference(FIX / "criteo_small.txt", spec, ds, sep="\t", header=False, token_of=token_of)
    assert ds.num_rows("all") == 40
    if min_count == 10:
        return
    assert "" in ds.vocabularies["I1"]  # missing is a token of its own (frequent enough)
    assert "-1" in ds.vocabularies["I1"] and "L52" in ds.vocabularies["I2"]  # ln(1382)^2 = 52.3


def test_criteo_min_count_one_keeps_every_value(tmp_path):
    spec = load_preset("criteo").to_dict()
    spec["min_count"] = 1
    ds = prepare_dataset(spec, FIX / "criteo_small.txt", tmp_path / "c", quiet=True)
    c26 = ds.vocabularies["C26"]
    assert "" in c26  # trailing tab: empty last field, not a column-count error
    train_ids = np.asarray(ds.ids("train"))
    assert (ds.frequencies[ds.offsets] == 0).all()  # nothing is OOV on train with min_count 1
    assert train_ids.min() >= 0


def test_avazu_matches_reference(tmp_path):
    spec = load_preset("avazu")
    ds = prepare_dataset("avazu", FIX / "avazu_small.csv", tmp_path / "a", quiet=True)
    import datetime

    def token_of(f, row):
        if f == "hour_of_day":
            return str(int(row["hour"][6:]))
        if f == "weekday":
            h = row["hour"]
            return str(datetime.date(2000 + int(h[:2]), int(h[2:4]), int(h[4:6])).weekday())
        return row[f]

    reference(FIX / "avazu_small.csv", spec, ds, sep=",", header=True, token_of=token_of)
    assert set(ds.vocabularies["weekday"][1:]) <= {"1", "2"}  # 2014-10-21 Tuesday, 22 Wednesday


def test_kdd12_with_and_without_profile(tmp_path):
    src = tmp_path / "kdd"
    src.mkdir()
    (src / "training.txt").write_bytes((FIX / "kdd12_small.txt").read_bytes())
    plain = prepare_dataset("kdd12", src / "training.txt", tmp_path / "k1", quiet=True)
    assert "gender" not in plain.field_names and len(plain.field_names) == 10
    spec = load_preset("kdd12").to_dict()
    spec["min_count"] = 1
    joined = prepare_dataset(spec, src / "training.txt", tmp_path / "k2", quiet=True,
                             joins={"profile": FIX / "userid_profile.txt"})
    assert joined.field_names[-2:] == ["gender", "age"]
    x, y = joined.arrays("all")
    rows = np.concatenate([np.load(joined.path / f"{s}_rows.npy") for s in SPLITS])
    raw = [line.split("\t") for line in (FIX / "kdd12_small.txt").read_text().splitlines()]
    assert np.array_equal(y, np.array([int(raw[r][0]) > 0 for r in rows], np.float32))
    profile = {"490234": ("1", "5"), "490235": ("2", "3"), "7": ("0", "1")}  # first row wins
    vocab = joined.vocabularies
    checked = 0
    for xi, r in zip(x - joined.offsets, rows):
        if xi[-2]:  # not OOV (values first seen outside train are)
            assert vocab["gender"][xi[-2]] == profile.get(raw[r][11], ("", ""))[0]
            assert vocab["age"][xi[-1]] == profile.get(raw[r][11], ("", ""))[1]
            checked += 1
    assert checked >= 20


def test_profile_found_next_to_input(tmp_path):
    (tmp_path / "training.txt").write_bytes((FIX / "kdd12_small.txt").read_bytes())
    (tmp_path / "userid_profile.txt").write_bytes((FIX / "userid_profile.txt").read_bytes())
    ds = prepare_dataset("kdd12", tmp_path / "training.txt", tmp_path / "k", quiet=True)
    assert ds.field_names[-2:] == ["gender", "age"]
    assert ds.meta["joins"]["profile"]["rows"] == 4


def test_every_preset_has_a_fixture_test():
    assert preset_names() == ["avazu", "criteo", "kdd12", "movielens-100k",
                            "movielens-100k-genre-token"]


def tree_digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


@pytest.mark.parametrize("preset,fixture", [("criteo", "criteo_small.txt"),
                                            ("avazu", "avazu_small.csv")])
def test_deterministic_and_block_size_independent(tmp_path, preset, fixture):
    a = prepare_dataset(preset, FIX / fixture, tmp_path / "a", quiet=True)
    b = prepare_dataset(preset, FIX / fixture, tmp_path / "b", quiet=True)
    c = prepare_dataset(preset, FIX / fixture, tmp_path / "c", quiet=True, block_bytes=1024)
    assert tree_digest(a.path) == tree_digest(b.path) == tree_digest(c.path)


def test_seed_changes_split_only(tmp_path):
    a = prepare_dataset("criteo", FIX / "criteo_small.txt", tmp_path / "a", quiet=True, seed=1)
    b = prepare_dataset("criteo", FIX / "criteo_small.txt", tmp_path / "b", quiet=True, seed=2)
    assert not np.array_equal(np.load(a.path / "train_rows.npy"), np.load(b.path / "train_rows.npy"))
    assert a.meta["spec"]["split"]["seed"] == 1
    from shaver.data.hashing import line_uniforms

    expected = line_uniforms(1, 0, np.arange(40))
    train = np.flatnonzero(expected < 0.8)
    assert np.array_equal(np.load(a.path / "train_rows.npy"), train)


def test_split_by_column_and_by_files(tmp_path):
    spec = load_preset("avazu").to_dict()
    spec["split"] = {"method": "column", "column": "hour", "val_from": "14102200",
                     "test_from": "14102220"}
    ds = prepare_dataset(spec, FIX / "avazu_small.csv", tmp_path / "t", quiet=True)
    hours = [line.split(",")[2] for line in (FIX / "avazu_small.csv").read_text().splitlines()[1:]]
    for s, want in (("train", {"14102100", "14102113"}), ("val", {"14102205"}),
                    ("test", {"14102223"})):
        assert {hours[r] for r in np.load(ds.path / f"{s}_rows.npy")} == want
    spec["split"] = {"method": "files"}
    files = {"train": FIX / "criteo_small.txt", "val": FIX / "criteo_small.txt",
             "test": FIX / "criteo_small.txt"}
    crit = load_preset("criteo").to_dict()
    crit["split"] = {"method": "files"}
    ds2 = prepare_dataset(crit, files, tmp_path / "f", quiet=True)
    assert ds2.meta["rows"] == {"train": 40, "val": 40, "test": 40}
    assert np.array_equal(ds2.ids("train"), ds2.ids("test"))


@pytest.mark.parametrize("workers", [2, 3, 7])
def test_parallel_parts_give_identical_output(tmp_path, workers):
    one = prepare_dataset("criteo", FIX / "criteo_small.txt", tmp_path / "one", quiet=True,
                          workers=1)
    many = prepare_dataset("criteo", FIX / "criteo_small.txt", tmp_path / "many", quiet=True,
                           workers=workers, block_bytes=1024)
    assert tree_digest(one.path) == tree_digest(many.path)


def test_parallel_errors_and_skips_keep_absolute_line_numbers(tmp_path):
    lines = (FIX / "criteo_small.txt").read_text().splitlines()
    lines[33] = "0\t1\t2"
    path = tmp_path / "in.txt"
    path.write_text("\n".join(lines) + "\n")
    from shaver.errors import DataError

    with pytest.raises(DataError, match=f"^{path}:34: found 3 columns, expected 40"):
        prepare_dataset("criteo", path, tmp_path / "e", quiet=True, workers=3)
    ds = prepare_dataset("criteo", path, tmp_path / "s", quiet=True, workers=3,
                         skip_bad_lines=True)
    assert ds.meta["skipped_examples"] == [f"{path}:34: found 3 columns, expected 40"]
    rows = np.sort(np.concatenate([np.load(ds.path / f"{s}_rows.npy") for s in SPLITS]))
    assert rows.tolist() == [r for r in range(40) if r != 33]
    one = prepare_dataset("criteo", path, tmp_path / "s1", quiet=True, workers=1,
                          skip_bad_lines=True)
    assert tree_digest(one.path) == tree_digest(ds.path)
