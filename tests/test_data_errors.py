"""Every bad-input case: exact message naming file and line (or field), nothing half-written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from shaver.data import prepare as prepare_mod
from shaver.data.prepare import prepare_dataset
from shaver.data.presets import load_preset
from shaver.errors import DataError, SpecError

GOOD = "\t".join(["0"] + ["1"] * 13 + ["a"] * 26)
FIX = Path(__file__).parent / "fixtures" / "data"


def write(tmp_path: Path, text: str, name: str = "in.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.mark.parametrize("text,line,message", [
    (f"{GOOD}\n{GOOD}\n0\t1\t2\n", 3, "found 3 columns, expected 40 (use --skip-bad-lines to "
                                      "skip such lines)"),
    (f"{GOOD}\n{GOOD}\t9\n", 2, "found 41 columns, expected 40 (use --skip-bad-lines to skip "
                                "such lines)"),
    (f"{GOOD}\n" + GOOD.replace("\t1\t", "\tx1\t", 1) + "\n", 2,
     "field 'I1': 'x1' is not an integer"),
    (f"{GOOD}\n{GOOD}\n" + GOOD.replace("\t1\ta", "\t1.5\ta") + "\n", 3,
     "field 'I13': '1.5' is not an integer"),
    (f"2{GOOD[1:]}\n", 1, "column 'label': label '2' is not 0 or 1"),
    (f"{GOOD}\n\n{GOOD}\n", 2, "column 'label': label '' is not 0 or 1"),
])
def test_criteo_bad_lines(tmp_path, text, line, message):
    path = write(tmp_path, text)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        prepare_dataset("criteo", path, out, quiet=True)
    assert str(err.value) == f"{path}:{line}: {message}"
    assert_nothing_written(out)


def test_kdd12_label_must_be_a_count(tmp_path):
    path = write(tmp_path, "1\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\t11\n-1\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\t11\n")
    with pytest.raises(DataError) as err:
        prepare_dataset("kdd12", path, tmp_path / "out", quiet=True)
    assert str(err.value) == f"{path}:2: column 'Click': label '-1' is not a non-negative integer count"


def test_empty_file(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(DataError) as err:
        prepare_dataset("criteo", path, tmp_path / "out", quiet=True)
    assert str(err.value) == f"{path}: empty file (expected data rows)"


def test_header_only_has_no_rows(tmp_path):
    header = (FIX / "avazu_small.csv").read_text().splitlines()[0]
    path = write(tmp_path, header + "\n", "a.csv")
    with pytest.raises(DataError) as err:
        prepare_dataset("avazu", path, tmp_path / "out", quiet=True)
    assert str(err.value) == f"{path}: no data rows (expected at least one)"


def test_wrong_header(tmp_path):
    path = write(tmp_path, "id,click\n1,0\n", "a.csv")
    with pytest.raises(DataError, match=re.escape(f"{path}:1: header has columns ['id', 'click'] "
                                                  "(2), expected ['id', 'click', 'hour',")):
        prepare_dataset("avazu", path, tmp_path / "out", quiet=True)


def test_unreadable_path(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(DataError) as err:
        prepare_dataset("criteo", path, tmp_path / "out", quiet=True)
    assert str(err.value) == f"{path}: cannot read the input (No such file or directory)"


def test_unknown_preset(tmp_path):
    with pytest.raises(SpecError) as err:
        prepare_dataset("critio", FIX / "criteo_small.txt", tmp_path / "out", quiet=True)
    assert str(err.value) == ("unknown preset 'critio': expected one of avazu, criteo, kdd12, "
                              "movielens-100k, movielens-100k-genre-token")


def test_unknown_field_in_spec(tmp_path):
    spec = load_preset("criteo").to_dict()
    spec["fields"].append({"name": "C99"})
    with pytest.raises(SpecError, match=r"^fields\[39\]\.name: unknown column 'C99' \(expected "
                                        r"one of the input columns: label, I1, "):
        prepare_dataset(spec, FIX / "criteo_small.txt", tmp_path / "out", quiet=True)


def test_output_already_present_is_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(DataError) as err:
        prepare_dataset("criteo", FIX / "criteo_small.txt", out, quiet=True)
    assert str(err.value) == f"{out}: output directory already exists (choose another or remove it)"
    assert (out / "mine.txt").read_text() == "keep me"


def test_skip_bad_lines_counts_and_traces_rows(tmp_path):
    lines = [GOOD, "0\t1", GOOD.replace("\ta", "\tb", 1), "2" + GOOD[1:],
             GOOD.replace("\t1\t", "\tzz\t", 1), GOOD.replace("\ta", "\tc", 1)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    spec = load_preset("criteo").to_dict()
    spec["split"] = {"method": "random", "fractions": [1.0, 0.0, 0.0]}
    ds = prepare_dataset(spec, path, tmp_path / "out", quiet=True, skip_bad_lines=True)
    assert ds.meta["skipped_lines"] == 3
    assert ds.num_rows("all") == 3
    assert np.load(ds.path / "train_rows.npy").tolist() == [0, 2, 5]
    assert ds.meta["skipped_examples"] == [
        f"{path}:2: found 2 columns, expected 40",
        f"{path}:4: column 'label': label '2' is not 0 or 1",
        f"{path}:5: field 'I1': 'zz' is not an integer",
    ]


def test_failure_in_encode_pass_leaves_nothing(tmp_path, monkeypatch):
    original = prepare_mod.remap

    def encode_then_interrupt(*args, **kwargs):
        original(*args, **kwargs)  # the split files exist in the temporary directory
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_mod, "remap", encode_then_interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("criteo", FIX / "criteo_small.txt", out, quiet=True)
    assert_nothing_written(out)


def test_too_many_features(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_mod, "MAX_FEATURES", 10)
    with pytest.raises(DataError, match=r"features do not fit int32 ids \(raise min_count\)"):
        prepare_dataset("criteo", FIX / "criteo_small.txt", tmp_path / "out", quiet=True)


def test_input_arguments(tmp_path):
    with pytest.raises(DataError, match="^no input file given$"):
        prepare_dataset("criteo", [], tmp_path / "o", quiet=True)
    with pytest.raises(DataError, match="^unknown split 'dev' for an input file"):
        prepare_dataset("criteo", {"dev": FIX / "criteo_small.txt"}, tmp_path / "o", quiet=True)
    spec = load_preset("criteo").to_dict()
    spec["split"] = {"method": "files"}
    with pytest.raises(DataError, match="^split method 'files' needs three inputs"):
        prepare_dataset(spec, [FIX / "criteo_small.txt"], tmp_path / "o", quiet=True)
    with pytest.raises(DataError, match="^unknown join table 'users' \\(the spec has: profile, "
                                        "query, keyword, title, description\\)"):
        prepare_dataset("kdd12", FIX / "kdd12_small.txt", tmp_path / "o", quiet=True,
                        joins={"users": FIX / "userid_profile.txt"})


def test_missing_column_in_csv_header(tmp_path):
    spec = {"input": {"format": "csv", "header": True}, "label": {"column": "y"},
            "fields": ["a", "b"]}
    path = write(tmp_path, "y,a\n1,x\n", "t.csv")
    with pytest.raises(DataError) as err:
        prepare_dataset(spec, path, tmp_path / "o", quiet=True)
    assert str(err.value) == (f"{path}:1: fields[1].name: unknown column 'b' (expected one of "
                              "the input columns: y, a; set fields[1].column to read another)")
    spec["fields"][1] = {"name": "b", "column": "B"}
    with pytest.raises(DataError) as err:
        prepare_dataset(spec, path, tmp_path / "o", quiet=True)
    assert str(err.value) == (f"{path}:1: fields[1].column: unknown column 'B' (expected one of "
                              "the input columns: y, a)")
    spec = {"input": {"format": "csv", "header": True}, "label": {"column": "click"},
            "fields": ["a"]}
    with pytest.raises(DataError) as err:
        prepare_dataset(spec, path, tmp_path / "o", quiet=True)
    assert str(err.value) == (f"{path}:1: label.column: unknown column 'click' (expected one of "
                              "the input columns: y, a)")
    assert not (tmp_path / "o").exists()


def test_missing_column_in_a_later_file(tmp_path):
    spec = {"input": {"format": "csv", "header": True}, "label": {"column": "y"},
            "fields": ["a", "b"]}
    first = write(tmp_path, "y,a,b\n1,x,z\n", "t1.csv")
    second = write(tmp_path, "y,a\n1,x\n", "t2.csv")
    with pytest.raises(DataError) as err:
        prepare_dataset(spec, [first, second], tmp_path / "o", quiet=True)
    assert str(err.value) == f"{second}: no column 'b' (columns: y, a)"


def test_invalid_utf8_in_csv(tmp_path):
    spec = {"input": {"format": "csv", "header": True}, "label": {"column": "y"}, "fields": ["a"]}
    path = tmp_path / "t.csv"
    path.write_bytes(b"y,a\n1,\xff\xfe\n")
    with pytest.raises(DataError) as err:
        prepare_dataset(spec, path, tmp_path / "o", quiet=True)
    assert str(err.value) == (f"{path}:2: not UTF-8 text (byte 0xFF at offset 6); is this the "
                              "right file?")
