"""``shaver predict`` reads raw rows in the data's own format: Criteo's headerless TSV (with
or without the label column, plain or gzip), or a CSV with a header (``--input-format csv``)."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shaver.cli import main
from shaver.data.encode import RowEncoder
from shaver.data.prepare import prepare_dataset
from shaver.data.presets import load_preset
from shaver.data.spec import InputSpec
from shaver.deploy import cli as deploy_cli
from shaver.deploy.artifact import export_artifact
from shaver.errors import DataError
from shaver.pruning.io import save_pruned
from shaver.runtime import load_artifact
from shaver.runtime.csvio import RowFormat, data_format, read_raw_rows
from test_deploy_support import pruned_model
from test_runtime import INFO

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
COLUMNS = list(load_preset("criteo").input.columns)  # label, I1-I13, C1-C26


def criteo_lines(n: int, seed: int = 0) -> list[str]:
    """Lines of Criteo's train.txt: label, 13 integers (some empty or negative), 26 hashes
    from small pools (so that some reach the preset's min_count of 10), some empty."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        ints = [("" if rng.random() < 0.2 else str(int(v))) for v in rng.integers(-2, 50, 13)]
        cats = [("" if rng.random() < 0.1 else f"{int(v):08x}") for v in rng.integers(0, 6, 26)]
        lines.append("\t".join([str(int(rng.random() < 0.25)), *ints, *cats]))
    return lines


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    """(artifact path, prepared dataset, the raw train lines) of a tiny Criteo run."""
    root = tmp_path_factory.mktemp("criteo")
    lines = criteo_lines(300)
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    dataset = prepare_dataset("criteo", root / "train.txt", root / "data", quiet=True)
    model, _ = pruned_model("fm", field_dims=dataset.field_dims, keep=[0.5] * 39)
    info = {**INFO, "dataset": {"path": str(dataset.path), "fingerprint": dataset.fingerprint}}
    save_pruned(root / "pruned", model, info)
    art = export_artifact(root / "pruned", root / "m.shaver").path
    return art, dataset, lines


def predict(art, path, *extra) -> np.ndarray:
    out = Path(path).parent / "scores.csv"
    assert main(["predict", "--artifact", str(art), "--input", str(path), "--output", str(out),
                 *extra]) == 0
    return np.loadtxt(out, skiprows=1, ndmin=1)


def printed(scores: np.ndarray) -> np.ndarray:
    """Scores as ``shaver predict`` writes them (8 significant digits)."""
    return np.array([float(f"{float(v):.8g}") for v in scores])


def reference(art, lines: list[str], columns: list[str]) -> np.ndarray:
    """The runtime's scores of rows split by hand, as printed."""
    rows = [dict(zip(columns, line.split("\t"))) for line in lines]
    return printed(load_artifact(art).predict_rows(rows))


def test_criteo_train_and_test_files_score_as_prepared(criteo, tmp_path):
    art, dataset, lines = criteo
    test_rows = np.load(dataset.path / "test_rows.npy")
    held_out = [lines[i] for i in test_rows]
    expected = printed(load_artifact(art).predict(dataset.ids("test")))  # ids as prepared
    train = tmp_path / "train.txt"
    train.write_text("\n".join(held_out) + "\n")
    np.testing.assert_array_equal(predict(art, train), expected)
    no_label = [line.split("\t", 1)[1] for line in held_out]  # as Criteo's test.txt
    test = tmp_path / "test.txt"
    test.write_text("\n".join(no_label) + "\n")
    np.testing.assert_array_equal(predict(art, test), expected)
    packed = tmp_path / "test.txt.gz"
    packed.write_bytes(gzip.compress(test.read_bytes()))
    np.testing.assert_array_equal(predict(art, packed), expected)
    header = tmp_path / "rows.csv"
    header.write_text(",".join(COLUMNS) + "\n" + "".join(line.replace("\t", ",") + "\n"
                                                          for line in held_out))
    np.testing.assert_array_equal(predict(art, header, "--input-format", "csv"), expected)


def test_a_trailing_empty_value_is_a_missing_value(criteo, tmp_path):
    art, _, _ = criteo
    line = "\t".join(["1", *["3"] * 13, *["00000001"] * 25, ""])  # C26 empty: a trailing tab
    path = tmp_path / "t.txt"
    path.write_text(line + "\n")
    assert line.endswith("\t") and len(line.split("\t")) == 40
    np.testing.assert_array_equal(predict(art, path), reference(art, [line], COLUMNS))


@pytest.mark.parametrize("content,extra,message", [
    ("1\t2\t3\n", [], ":1: 3 values, expected 40 (label to C26) or 39 (I1 to C26)"),
    ("\t" * 38 + "\n" + "\t" * 38 + "\n" + "\t" * 39 + "\n", [],
     ":3: 40 values, the first row has 39"),
    ("", [], ": empty file (expected TSV rows without a header)"),
    ("\t" * 39 + "\n", ["--input-format", "csv"],
     ":1: the header has no column I1, I2, I3, I4, I5, I6, I7, I8, I9, I10, I11, I12, I13, C1, "
     "C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16, C17, C18, C19, C20, "
     "C21, C22, C23, C24, C25, C26 (expected columns: I1, I2, I3, I4, I5, I6, I7, I8, I9, I10, "
     "I11, I12, I13, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16, C17, "
     "C18, C19, C20, C21, C22, C23, C24, C25, C26; the header has: " + "\t" * 39 + "); "
     "--allow-missing reads them as missing values"),
])
def test_rows_of_another_width_are_refused_with_their_line(criteo, tmp_path, capsys, content,
                                                           extra, message):
    art, _, _ = criteo
    path = tmp_path / "t.txt"
    path.write_text(content)
    capsys.readouterr()
    code = main(["predict", "--artifact", str(art), "--input", str(path), *extra])
    out, err = capsys.readouterr()
    assert (code, out, err) == (2, "", f"error: {path}{message}\n")


def test_input_format_with_ids_is_refused(criteo, tmp_path, capsys):
    art, _, _ = criteo
    path = tmp_path / "ids.csv"
    path.write_text("0\n")
    code = main(["predict", "--artifact", str(art), "--input", str(path), "--ids",
                 "--input-format", "data"])
    assert (code, capsys.readouterr().err) == (2, "error: --input-format reads raw rows; --ids "
                                                  "reads a CSV of global ids: pass one of them\n")


def test_rows_of_a_spec_with_its_own_delimiter_and_a_line_to_skip(tmp_path, capsys):
    spec = {"name": "semi", "input": {"format": "csv", "header": "skip", "delimiter": ";",
                                      "columns": ["y", "a", "b"]},
            "label": {"column": "y"}, "fields": [{"name": "a"}, {"name": "b"}]}
    rng = np.random.default_rng(1)
    body = "".join(f'{int(rng.random() < 0.5)};"x{int(i)};1";b{int(j)}\n'
                   for i, j in rng.integers(0, 3, (60, 2)))
    (tmp_path / "raw.txt").write_text("ignored;first;line\n" + body)
    dataset = prepare_dataset(spec, tmp_path / "raw.txt", tmp_path / "data", quiet=True)
    model, _ = pruned_model("lr", field_dims=dataset.field_dims, keep=[1.0, 1.0])
    save_pruned(tmp_path / "pruned", model, {**INFO, "dataset": {
        "path": str(dataset.path), "fingerprint": dataset.fingerprint}})
    art = export_artifact(tmp_path / "pruned", tmp_path / "m.shaver").path
    path = tmp_path / "in.txt"
    path.write_text('skipped\n"x2;1";b0\n"x1;1";b2\n')  # without the label column
    rows = [{"a": "x2;1", "b": "b0"}, {"a": "x1;1", "b": "b2"}]
    expected = load_artifact(art).predict_rows(rows)
    np.testing.assert_array_equal(predict(art, path), printed(expected))
    assert "x2;1" in dataset.vocabularies["a"]  # the quoted delimiter was read as preparation did


def test_plain_tsv_scores_without_torch_or_pyarrow(criteo, tmp_path):
    art, _, lines = criteo
    path = tmp_path / "t.txt"
    path.write_text("\n".join(line.split("\t", 1)[1] for line in lines[:20]) + "\n")
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['pyarrow'] = None\n"
        "from shaver.runtime import load_artifact\n"
        "from shaver.runtime.csvio import read_raw_rows\n"
        f"art = load_artifact({str(art)!r})\n"
        f"rows = read_raw_rows({str(path)!r}, art.raw_columns, fmt=art.row_format)\n"
        "print(' '.join(repr(float(v)) for v in art.predict_rows(rows)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = printed(np.array([float(v) for v in out.stdout.split()]))
    np.testing.assert_array_equal(got, reference(art, [ln.split("\t", 1)[1] for ln in lines[:20]],
                                                 COLUMNS[1:]))


def test_criteo_own_test_file(criteo, tmp_path):
    """The real DAC test.txt head (no label, trailing tabs, negative integers), when present."""
    source = SHARED / "criteo" / "test_head10000_nolabel.txt"
    if not source.is_file():
        pytest.skip(f"{source} not present")
    art, _, _ = criteo
    lines = source.read_text().splitlines()[:500]
    path = tmp_path / "test.txt"
    path.write_text("\n".join(lines) + "\n")
    got = predict(art, path)
    assert got.shape == (500,)
    np.testing.assert_array_equal(got, reference(art, lines, COLUMNS[1:]))
    encoder = RowEncoder.from_dataset(criteo[1].path)
    assert encoder.columns == COLUMNS[1:]


def test_formats_that_cannot_carry_the_models_columns_are_refused(tmp_path):
    with pytest.raises(DataError) as err:
        data_format(InputSpec(format="parquet"), ["a"], "m.shaver")
    assert str(err.value) == ("m.shaver: the model's data was prepared from parquet files, which "
                              "shaver predict does not read; pass --input-format csv and a CSV "
                              "with a header of the raw column names")
    fmt = data_format(InputSpec(format="tsv", columns=("y", "a", "b")), ["a", "Age"], "m")
    assert fmt == RowFormat(kind="TSV", delimiter="\t", quoted=False, header=False,
                            columns=("y", "a", "b"), optional=1)
    path = tmp_path / "t.txt"
    path.write_text("x\ty\n")
    with pytest.raises(DataError) as err:
        read_raw_rows(path, ["a", "Age"], fmt=fmt)
    assert str(err.value) == (f"{path}: TSV rows without a header have no column Age (the model "
                              "reads them from a joined table); --input-format csv reads a "
                              "header that names them, --allow-missing reads them as missing "
                              "values")
    assert read_raw_rows(path, ["a", "Age"], fmt=fmt, allow_missing=True) == [{"a": "x",
                                                                                "b": "y"}]
    path.write_text("")
    with pytest.raises(DataError) as err:
        read_raw_rows(path, ["a"], fmt=RowFormat(kind="TSV", header="skip", columns=("a",)))
    assert str(err.value) == f"{path}: empty file (expected a first line to skip, then TSV rows)"


def test_a_value_the_feature_map_cannot_read_names_its_line(criteo, tmp_path, capsys,
                                                            monkeypatch):
    art, _, lines = criteo
    cells = lines[6].split("\t")
    cells[1] = "abc"  # I1 is an integer column
    path = tmp_path / "t.txt"
    path.write_text("\n".join([*lines[:6], "\t".join(cells), *lines[7:9]]) + "\n")
    monkeypatch.setattr(deploy_cli, "PREDICT_BATCH", 4)  # the bad row is in the second batch
    code = main(["predict", "--artifact", str(art), "--input", str(path)])
    out, err = capsys.readouterr()
    assert (code, out, err) == (2, "", f"error: {path}:7: field 'I1': 'abc' is not an integer\n")
