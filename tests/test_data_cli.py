"""`shaver data prepare | info | synth`: help, outputs, errors as exit status 2."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from shaver.data.cli import register
from shaver.data.store import open_dataset
from shaver.errors import ShaverError

FIX = Path(__file__).parent / "fixtures" / "data"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Parse with only the data stage registered; handle errors like shaver.cli.main."""
    parser = argparse.ArgumentParser(prog="shaver")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except ShaverError as exc:
        print(f"error: {exc}", file=__import__("sys").stderr)
        code = 2
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("cmd", [["data"], ["data", "prepare"], ["data", "info"],
                                 ["data", "synth"]])
def test_help(cmd, capsys):
    parser = argparse.ArgumentParser(prog="shaver")
    register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args([*cmd, "--help"])
    assert exit_.value.code == 0
    assert "usage: shaver data" in capsys.readouterr().out


def test_prepare_then_info(tmp_path, capsys):
    out = tmp_path / "c"
    code, text, _ = run(["data", "prepare", "--preset", "criteo", "--input",
                         str(FIX / "criteo_small.txt"), "--out", str(out), "-q",
                         "--workers", "2"], capsys)
    assert code == 0 and "features:" in text and "train" in text
    code, text, _ = run(["data", "info", str(out), "--verify"], capsys)
    assert code == 0 and "checksums: ok" in text and "C26" in text
    (out / "vocab.json").write_text("{}")
    code, _, err = run(["data", "info", str(out), "--verify"], capsys)
    assert code == 2 and err == f"error: {out / 'vocab.json'}: checksum mismatch (file changed or corrupt)\n"


def test_prepare_with_spec_join_and_skip(tmp_path, capsys):
    spec = tmp_path / "kdd.yaml"
    from shaver.data.presets import PRESET_DIR

    spec.write_text((PRESET_DIR / "kdd12.yaml").read_text().replace("min_count: 10", "min_count: 1"))
    data = tmp_path / "train.txt"
    data.write_text((FIX / "kdd12_small.txt").read_text() + "1\t2\n")
    code, text, _ = run(["data", "prepare", "--spec", str(spec), "--input", str(data), "--out",
                         str(tmp_path / "k"), "--join", f"profile={FIX / 'userid_profile.txt'}",
                         "--skip-bad-lines", "--seed", "5", "-q"], capsys)
    assert code == 0
    assert "skipped bad lines: 1" in text and f"{data}:25: found 2 columns, expected 12" in text
    # every row carries its user's profile (the first of two for 490234; none for user 0)
    profile = {"490234": ("1", "5"), "490235": ("2", "3"), "7": ("0", "1")}
    users = [line.split("\t")[11] for line in (FIX / "kdd12_small.txt").read_text().splitlines()]
    ds = open_dataset(tmp_path / "k")
    vocab = ds.vocabularies
    fields = ds.field_names
    seen = []
    for split in ("train", "val", "test"):
        ids = ds.ids(split) - ds.offsets
        for line, row in zip(np.load(ds.path / f"{split}_rows.npy"), ids):
            got = tuple(vocab[f][row[fields.index(f)]] for f in ("UserID", "gender", "age"))
            assert got == (users[line], *profile.get(users[line], ("", "")))
            seen.append(int(line))
    assert sorted(seen) == list(range(24))


def test_prepare_given_files(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    from shaver.data.presets import PRESET_DIR

    spec.write_text((PRESET_DIR / "criteo.yaml").read_text().replace(
        "split: {method: random, fractions: [0.8, 0.1, 0.1], seed: 2024}", "split: {method: files}"))
    f = str(FIX / "criteo_small.txt")
    code, text, _ = run(["data", "prepare", "--spec", str(spec), "--input", f"train={f}",
                         f"val={f}", f"test={f}", "--out", str(tmp_path / "o"), "-q"], capsys)
    assert code == 0 and __import__("re").search(r"train 40 .*, val 40 .*, test 40 ", text)
    code, _, err = run(["data", "prepare", "--spec", str(spec), "--input", f"train={f}", f,
                        "--out", str(tmp_path / "o2"), "-q"], capsys)
    assert code == 2 and "give either plain paths or train=/val=/test=" in err


def test_prepare_errors_exit_2(tmp_path, capsys):
    code, _, err = run(["data", "prepare", "--preset", "nope", "--input", "x", "--out",
                        str(tmp_path / "o")], capsys)
    assert code == 2 and err.startswith("error: unknown preset 'nope'")
    code, _, err = run(["data", "info", str(tmp_path / "missing")], capsys)
    assert code == 2 and "not a prepared dataset directory" in err


def test_bad_join_argument(capsys):
    parser = argparse.ArgumentParser(prog="shaver")
    register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "prepare", "--preset", "kdd12", "--input", "x", "--out", "o",
                           "--join", "profile"])
    assert "expected NAME=PATH, got 'profile'" in capsys.readouterr().err


def test_synth(tmp_path, capsys):
    code, text, _ = run(["data", "synth", "--rows", "2000", "--out", str(tmp_path / "s.txt"),
                         "--scale", "0.001", "-q"], capsys)
    assert code == 0 and "wrote 2000 rows" in text and "hidden model AUC" in text
    assert len((tmp_path / "s.txt").read_text().splitlines()) == 2000


@pytest.mark.parametrize("yaml_text,message", [
    ("input: {format: csv, header: true}\nlabel: {column: y}\nfields:\n  - a\n  - {name: b}\n"
     "  - {name: n, kind: numeric, discretiser: log10}\n",
     "fields[2].discretiser: 'log10' is not one of criteo, log2, quantile"),
    ("input: {format: csv, header: true, delimiter: ', '}\nfields: [a]\n",
     "input.delimiter: expected one character, found ', '"),
    ("input: {format: csv, columns: [y, a]}\nlabel: {column: click}\nfields: [a]\n",
     "label.column: unknown column 'click' (expected one of the input columns: y, a)"),
    ("fields: [a\n", ":2: not valid YAML (expected ',' or ']', but got '<stream end>', column 1)"),
])
def test_prepare_spec_mistake_is_one_line(tmp_path, capsys, yaml_text, message):
    spec = tmp_path / "mine.spec"  # not .yaml: --spec always names a file
    spec.write_text(yaml_text)
    data = tmp_path / "t.csv"
    data.write_text("y,a,b,n\n1,x,y,3\n")
    out = tmp_path / "o"
    code, text, err = run(["data", "prepare", "--spec", str(spec), "--input", str(data),
                           "--out", str(out), "-q"], capsys)
    assert code == 2 and text == "" and err.count("\n") == 1
    assert err == f"error: {spec}{'' if message.startswith(':') else ': '}{message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.spec", "t.csv"]
