"""List (bag) fields in the data stage: spec, streaming preparation, RowEncoder, presets."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bag_data import make_bags
from shaver.data.builtin import prepare_movielens_from_wheel
from shaver.data.encode import RowEncoder, RowValueError
from shaver.data.info import describe
from shaver.data.prepare import prepare_dataset
from shaver.data.presets import load_preset
from shaver.data.spec import DatasetSpec
from shaver.errors import DataError, SpecError
from shaver.layout import Bag, FieldLayout
from test_data_builtin import make_wheel

KDD = Path(__file__).parents[2] / "shared" / "data" / "kdd12" / "training_example.txt"
if not KDD.is_file():
    KDD = Path("/work/shared/data/kdd12/training_example.txt")

# label, user, tags (list, |), hist (weighted list, ;)
ROWS = [
    ("1", "u1", "a|b|c", "x:1;y:3"),
    ("0", "u2", "", ""),
    ("1", "u1", "b||b", "x:2"),
    ("0", "u3", "c|a|d|e", "y:0.5;x:0.5;z:1"),
    ("1", "u2", "rare", "x:4;;y:1"),
    ("0", "u1", "a", "q:2"),
]


def write_tsv(path: Path, rows=ROWS) -> Path:
    path.write_text("label\tuser\ttags\thist\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


def spec_dict(**tags) -> dict:
    return {
        "name": "lists",
        "input": {"format": "tsv", "header": True},
        "label": {"column": "label"},
        "fields": [
            {"name": "user"},
            {"name": "tags", "kind": "list", "max_len": 3, **tags},
            {"name": "hist", "kind": "list", "separator": ";", "weighted": True,
             "pooling": "sum", "max_len": 2, "keep": "last"},
        ],
        "split": {"method": "random", "fractions": [1.0, 0.0, 0.0]},
    }


def tree_digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


# -- spec ------------------------------------------------------------------------------------
def test_spec_round_trip_and_layout():
    spec = DatasetSpec.from_dict(spec_dict(keep="last", min_count=2))
    assert DatasetSpec.from_dict(spec.to_dict()) == spec
    tags = spec.to_dict()["fields"][1]
    assert {k: tags[k] for k in ("separator", "max_len", "keep", "pooling", "weighted")} == {
        "separator": "|", "max_len": 3, "keep": "last", "pooling": "mean", "weighted": False}
    assert "max_len" not in spec.to_dict()["fields"][0]  # single fields: as before lists
    assert spec.layout == FieldLayout(3, (Bag(1, 3, "mean", False, "last"),
                                          Bag(2, 2, "sum", True, "last")))
    assert load_preset("criteo").layout.has_bags is False


def with_tags(**change) -> dict:
    d = spec_dict()
    d["fields"][1] = {"name": "tags", "kind": "list", **change}
    return d


@pytest.mark.parametrize("change,message", [
    ({"separator": "||"}, "fields[1].separator: expected one character, found '||'"),
    ({"separator": 3}, "fields[1].separator: expected one character, found 3"),
    ({"max_len": 0}, "fields[1].max_len: expected an integer >= 1, found 0"),
    ({"max_len": "6"}, "fields[1].max_len: expected an integer >= 1, found '6'"),
    ({"keep": "middle"}, "fields[1].keep: 'middle' is not one of first, last"),
    ({"pooling": "max"}, "fields[1].pooling: 'max' is not one of sum, mean"),
    ({"weighted": "yes"}, "fields[1].weighted: expected true or false, found 'yes'"),
    ({"weighted": True, "separator": ":"}, "fields[1].separator: ':' separates a weighted "
                                           "value from its weight (choose another separator)"),
    ({"derive": "first_token"}, "fields[1].derive: a list field takes no derive (its values "
                                "are the tokens)"),
    ({"kind": "categorical", "max_len": 3}, "fields[1].max_len: only list fields take one "
                                            "(set kind: list)"),
    ({"kind": "numeric", "discretiser": "log2", "pooling": "sum"},
     "fields[1].pooling: only list fields take one (set kind: list)"),
])
def test_bad_list_keys(change, message):
    with pytest.raises(SpecError) as err:
        DatasetSpec.from_dict(with_tags(**change))
    assert str(err.value) == message


# -- preparation -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lists")
    return prepare_dataset(spec_dict(), write_tsv(tmp / "in.tsv"), tmp / "out", quiet=True)


def test_slots_are_hand_computed(prepared):
    ds = prepared
    assert ds.meta["format_version"] == 2
    assert ds.layout.bags == (Bag(1, 3, "mean", False, "first"), Bag(2, 2, "sum", True, "last"))
    vocab = ds.vocabularies
    # tags after truncation to the first 3 (c|a|d|e -> c a d): a 3, b 3, c 2, d 1, rare 1
    assert vocab["tags"] == ["__OOV__", "a", "b", "c", "d", "rare"]
    # hist, last 2 kept: (x y) (-) (x) (x z) (x y) (q): x 4, y 2, q 1, z 1
    assert vocab["hist"] == ["__OOV__", "x", "y", "q", "z"]
    assert np.array_equal(np.load(ds.path / "train_rows.npy"), np.arange(6))
    x, w = ds.slots("train")
    o_tags, o_hist = ds.offsets[1], ds.offsets[2]
    t = {v: i + o_tags for i, v in enumerate(vocab["tags"])}
    h = {v: i + o_hist for i, v in enumerate(vocab["hist"])}
    u = {v: i for i, v in enumerate(vocab["user"])}
    P = -1
    expected = np.array([
        [u["u1"], t["a"], t["b"], t["c"], h["x"], h["y"]],
        [u["u2"], P, P, P, P, P],
        [u["u1"], t["b"], t["b"], P, h["x"], P],  # empty value dropped, duplicate kept
        [u["u3"], t["c"], t["a"], t["d"], h["x"], h["z"]],  # tags: first 3; hist: last 2
        [u["u2"], t["rare"], P, P, h["x"], h["y"]],
        [u["u1"], t["a"], P, P, h["q"], P],
    ])
    assert np.array_equal(x, expected)
    assert w.dtype == np.float32
    assert np.array_equal(w, np.array([
        [1, 1, 1, 1, 1, 3], [1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 2, 0],
        [1, 1, 1, 1, .5, 1], [1, 1, 0, 0, 4, 1], [1, 1, 0, 0, 2, 0]], np.float32))
    # the ragged files themselves
    assert np.array_equal(np.load(ds.path / "train_bag1_offsets.npy"), [0, 3, 3, 5, 8, 9, 10])
    assert np.load(ds.path / "train_bag1_values.npy").dtype == np.int32
    assert not (ds.path / "train_bag1_weights.npy").exists()
    assert np.array_equal(np.load(ds.path / "train_bag2_weights.npy"),
                          np.array([1, 3, 2, .5, 1, 4, 1, 2], np.float32))
    assert ds.ids("train").shape == (6, 1)  # single-valued fields only


def test_pooling_coefficients_sum_and_mean(prepared):
    x, w = prepared.slots("train")
    coef = prepared.layout.coefficients(x, w)
    assert np.allclose(coef[0], [1, 1 / 3, 1 / 3, 1 / 3, 1, 3])  # mean tags, sum hist
    assert np.allclose(coef[1], [1, 0, 0, 0, 0, 0])  # empty bags pool to 0


def test_frequencies_count_every_value(prepared):
    freq = prepared.frequencies
    vocab = prepared.vocabularies
    o = prepared.offsets
    assert freq[o[1]:o[1] + 6].tolist() == [0, 3, 3, 2, 1, 1]
    assert freq[o[2]:o[2] + 5].tolist() == [0, 4, 2, 1, 1]
    assert freq[:len(vocab["user"])].tolist() == [0, 3, 2, 1]


def test_min_count_maps_rare_values_to_oov(tmp_path):
    ds = prepare_dataset(spec_dict(min_count=2), write_tsv(tmp_path / "in.tsv"),
                         tmp_path / "out", quiet=True)
    assert ds.vocabularies["tags"] == ["__OOV__", "a", "b", "c"]
    x, _ = ds.slots("train")
    o = ds.offsets[1]
    assert x[3, 1:4].tolist() == [o + 3, o + 1, o]  # c a d: d (seen once) is OOV
    assert x[4, 1:4].tolist() == [o, -1, -1]  # rare -> OOV, still a value
    assert ds.frequencies[o] == 2  # the OOV id counts the rare values' occurrences


def test_keep_last(tmp_path):
    ds = prepare_dataset(spec_dict(keep="last"), write_tsv(tmp_path / "in.tsv"),
                         tmp_path / "out", quiet=True)
    x, _ = ds.slots("train")
    words = ["__pad__"] + ds.vocabularies["tags"]
    o = ds.offsets[1]
    assert [words[0 if i < 0 else i - o + 1] for i in x[3, 1:4]] == ["a", "d", "e"]


def test_deterministic_and_workers_independent(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(str(rng.integers(2)), f"u{rng.integers(30)}",
             "|".join(f"t{k}" for k in rng.integers(0, 40, rng.integers(0, 6))),
             ";".join(f"h{k}:{rng.integers(1, 5)}" for k in rng.integers(0, 20, rng.integers(0, 4))))
            for _ in range(400)]
    src = write_tsv(tmp_path / "in.tsv", rows)
    spec = spec_dict()
    spec["split"] = {"method": "random", "fractions": [0.6, 0.2, 0.2]}
    a = prepare_dataset(spec, src, tmp_path / "a", quiet=True, workers=1)
    b = prepare_dataset(spec, src, tmp_path / "b", quiet=True, workers=1)
    c = prepare_dataset(spec, src, tmp_path / "c", quiet=True, workers=2, block_bytes=1024)
    d = prepare_dataset(spec, src, tmp_path / "d", quiet=True, workers=3, block_bytes=2048)
    assert tree_digest(a.path) == tree_digest(b.path) == tree_digest(c.path) == tree_digest(d.path)
    for s in ("train", "val", "test"):  # every split's rows read back whole
        x, w = a.slots(s)
        assert len(x) == a.num_rows(s) and w.shape == x.shape


def test_bad_weights_name_file_line_field_and_expected(tmp_path):
    rows = [*ROWS[:3], ("1", "u1", "a", "x:1;y")]
    src = write_tsv(tmp_path / "in.tsv", rows)
    with pytest.raises(DataError) as err:
        prepare_dataset(spec_dict(), src, tmp_path / "out", quiet=True)
    assert str(err.value) == (f"{src}:5: field 'hist': value 'y' has no ':weight' (expected "
                              "value:weight items, the weight a finite number)")
    src = write_tsv(tmp_path / "in2.tsv", [*ROWS[:2], ("1", "u1", "a", "x:abc")])
    with pytest.raises(DataError, match=r"in2\.tsv:4: field 'hist': value 'x:abc' has weight "
                                        r"'abc' \(expected value:weight items"):
        prepare_dataset(spec_dict(), src, tmp_path / "out", quiet=True)
    src = write_tsv(tmp_path / "in3.tsv", [*ROWS[:2], ("1", "u1", "a", "x:nan")])
    with pytest.raises(DataError, match=r"in3\.tsv:4: field 'hist': value 'x:nan' has weight"):
        prepare_dataset(spec_dict(), src, tmp_path / "out", quiet=True)


def test_negative_weights_refused_for_mean_only(tmp_path):
    src = write_tsv(tmp_path / "in.tsv", [*ROWS[:2], ("1", "u1", "a", "x:-1")])
    prepare_dataset(spec_dict(), src, tmp_path / "sum", quiet=True)  # sum pooling: allowed
    spec = spec_dict()
    spec["fields"][2]["pooling"] = "mean"
    with pytest.raises(DataError) as err:
        prepare_dataset(spec, src, tmp_path / "mean", quiet=True)
    assert str(err.value) == (f"{src}:4: field 'hist': value 'x:-1' has weight '-1' (expected "
                              "value:weight items, the weight a finite number >= 0 (mean "
                              "pooling))")


def test_skip_bad_lines_drops_bad_lists(tmp_path):
    src = write_tsv(tmp_path / "in.tsv", [*ROWS, ("1", "u1", "a", "x:1;y")])
    ds = prepare_dataset(spec_dict(), src, tmp_path / "out", quiet=True, skip_bad_lines=True)
    assert ds.num_rows("all") == len(ROWS) and ds.meta["skipped_lines"] == 1


def test_only_list_fields_and_csv_quoted_lists(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text('y,items\n1,"a,b"\n0,\n1,"b,b,c"\n')
    spec = {"name": "only", "input": {"format": "csv", "header": True},
            "label": {"column": "y"}, "split": {"method": "random", "fractions": [1, 0, 0]},
            "fields": [{"name": "items", "kind": "list", "separator": ",", "max_len": 2}]}
    ds = prepare_dataset(spec, src, tmp_path / "out", quiet=True)
    assert ds.ids("train").shape == (3, 0)
    x, w = ds.slots("train")
    assert w is None
    assert x.tolist() == [[2, 1], [-1, -1], [1, 1]]  # b (3) before a (1)


def test_single_valued_output_unchanged_by_lists(tmp_path):
    """A spec without list fields writes version 1 (no layout, no bag files)."""
    spec = spec_dict()
    spec["fields"] = spec["fields"][:1]
    ds = prepare_dataset(spec, write_tsv(tmp_path / "in.tsv"), tmp_path / "out", quiet=True)
    assert ds.meta["format_version"] == 1 and "layout" not in ds.meta
    assert not any("bag" in p.name for p in ds.path.iterdir())
    assert "max_len" not in ds.meta["spec"]["fields"][0]


# -- RowEncoder --------------------------------------------------------------------------------
def test_row_encoder_equals_prepared_slots(prepared):
    enc = RowEncoder.from_dataset(prepared.path)
    assert enc.layout == prepared.layout
    rows = [dict(zip(("label", "user", "tags", "hist"), r)) for r in ROWS]
    x, w = enc.encode_slots(rows)
    px, pw = prepared.slots("train")
    assert np.array_equal(x, px) and np.array_equal(w, pw)
    assert np.array_equal(enc.encode(rows), px)


def test_row_encoder_unseen_lists_and_python_lists(prepared):
    enc = RowEncoder.from_dataset(prepared)
    o = prepared.offsets
    x, w = enc.encode_slots([{"user": "new", "tags": ["b", "new", "a", "c"], "hist": "zz:2"},
                             {"user": "u1", "tags": None, "hist": ""}])
    assert x[0].tolist() == [0, o[1] + 2, o[1], o[1] + 1, o[2], -1]
    assert w[0].tolist() == [1, 1, 1, 1, 2, 0]
    assert x[1].tolist() == [1, -1, -1, -1, -1, -1]
    with pytest.raises(RowValueError) as err:
        enc.encode([{"user": "u1", "tags": "", "hist": ""}, {"user": "u1", "tags": "",
                                                              "hist": "x"}])
    assert str(err.value) == ("row 1: field 'hist': value 'x' has no ':weight' (expected "
                              "value:weight items, the weight a finite number)")


def test_row_encoder_refuses_a_layout_that_disagrees(prepared):
    meta = json.loads((prepared.path / "meta.json").read_text())
    meta["layout"] = None
    with pytest.raises(DataError, match="meta's layout \\(no bags\\) does not match"):
        RowEncoder.from_meta(meta, prepared.vocabularies)


def test_row_encoder_without_lists_keeps_field_columns(tmp_path):
    spec = spec_dict()
    spec["fields"] = spec["fields"][:1]
    ds = prepare_dataset(spec, write_tsv(tmp_path / "in.tsv"), tmp_path / "out", quiet=True)
    enc = RowEncoder.from_dataset(ds)
    x, w = enc.encode_slots([{"user": "u2"}, {"user": "?"}])
    assert x.tolist() == [[2], [0]] and w is None


# -- presets ---------------------------------------------------------------------------------
def test_movielens_presets():
    ml = load_preset("movielens-100k")
    genres = ml.fields[-1]
    assert (genres.name, genres.kind, genres.separator, genres.max_len, genres.pooling,
            genres.keep, genres.source) == ("genres", "list", " ", 6, "mean", "first", "item")
    token = load_preset("movielens-100k-genre-token")
    assert token.fields[-1].name == "genre" and not token.layout.has_bags
    assert token.fields[:-1] == ml.fields[:-1]


def test_movielens_tiny_wheel_lists_genres(tmp_path):
    ds = prepare_movielens_from_wheel(make_wheel(tmp_path / "r.whl"), tmp_path / "ml")
    assert ds.field_names[-1] == "genres" and ds.layout.bags == (Bag(7, 6, "mean"),)
    assert set(ds.vocabularies["genres"]) == {"__OOV__", "Animation", "Children's", "Comedy",
                                              "Action", "Thriller"}
    x, _ = ds.slots("train")
    words = ds.vocabularies["genres"]
    genre_sets = {tuple(words[i - ds.offsets[7]] for i in row[7:] if i >= 0) for row in x}
    assert genre_sets <= {("Animation", "Children's", "Comedy"), ("Action", "Thriller"),
                          ("Thriller",), ()}


@pytest.mark.skipif(not KDD.is_file(), reason="shared KDD12 example not present")
def test_kdd12_token_files_add_list_fields(tmp_path):
    src = tmp_path / "kdd"
    src.mkdir()
    shutil.copy(KDD, src / "training.txt")
    raw = [line.split("\t") for line in (src / "training.txt").read_text().splitlines()]
    spec = load_preset("kdd12").to_dict()
    spec["min_count"] = 1
    plain = prepare_dataset(spec, src / "training.txt", tmp_path / "plain", quiet=True)
    assert len(plain.field_names) == 10 and plain.meta["format_version"] == 1
    columns = {"queryid": 7, "purchasedkeywordid": 8, "titleid": 9, "descriptionid": 10}
    for i, (name, col) in enumerate(columns.items()):
        ids = sorted({r[col] for r in raw})
        (src / f"{name}_tokensid.txt").write_text(
            "".join(f"{k}\t{'|'.join(str(10 * i + j) for j in range(n % 5))}\n"
                    for n, k in enumerate(ids)))
    full = prepare_dataset(spec, src / "training.txt", tmp_path / "full", quiet=True)
    names = ["query_tokens", "keyword_tokens", "title_tokens", "description_tokens"]
    assert full.field_names == plain.field_names + names
    assert [(b.max_len, b.pooling) for b in full.layout.bags] == [(16, "mean"), (16, "mean"),
                                                                  (32, "mean"), (64, "mean")]
    x, _ = full.arrays("all")
    rows = np.concatenate([np.load(full.path / f"{s}_rows.npy") for s in ("train", "val", "test")])
    vocab = full.vocabularies
    for (name, col), field in zip(columns.items(), names):
        f = full.field_names.index(field)
        ids = sorted({r[col] for r in raw})
        lo, hi = full.layout.starts[f], full.layout.starts[f + 1]
        for row, r in zip(x, rows):
            n = ids.index(raw[r][col])
            got = [vocab[field][i - full.offsets[f]] for i in row[lo:hi] if i >= 0]
            assert got == [str(10 * list(columns).index(name) + j) for j in range(n % 5)]
    # without the profile and token files the plain ids are the same columns
    assert np.array_equal(full.ids("train"), plain.ids("train"))


def test_info_shows_list_fields(tmp_path):
    """`shaver data info` names each list field's pooling, max_len and ids per train row."""
    ds = make_bags(tmp_path / "bags", rows=400)
    lines = describe(ds).splitlines()
    per_row = ds.frequencies[ds.offsets[1]:ds.offsets[1] + ds.field_dims[1]].sum() / 320
    assert lines[-3].endswith(f"mean, <= 4, {per_row:.2f}")
    tags = ds.frequencies[ds.offsets[3]:].sum() / 320
    assert lines[-1].split()[-3:] == ["<=", "3,", f"{tags:.2f}"]
    assert "sum, weighted" in lines[-1]
