"""Raw text that is not plain UTF-8: refused in one line (exit 2, nothing written), or read
as the same dataset as the plain file (UTF-8 byte-order mark, CRLF line ends, gzip)."""

from __future__ import annotations

import bz2
import gzip
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from shaver.cli import main
from shaver.data import textin
from shaver.data.prepare import prepare_dataset
from shaver.errors import DataError

FIX = Path(__file__).parent / "fixtures" / "data"
CSV_SPEC = {"input": {"format": "csv", "header": True}, "label": {"column": "y"},
            "fields": ["a", {"name": "n", "kind": "numeric", "discretiser": "log2"}]}
CSV_TEXT = "y,a,n\n1,x,5\n0,é,1\n1,x,\n0,z,-3\n1,日本,40\n"


def refused(tmp_path: Path, preset_or_spec, path: Path) -> str:
    """The message of the DataError, checking that nothing was left behind."""
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        prepare_dataset(preset_or_spec, path, out, quiet=True, workers=1)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    return str(err.value)


def same_dataset(a, b) -> None:
    assert a.field_names == b.field_names and a.vocabularies == b.vocabularies
    for split in ("train", "val", "test"):
        assert np.array_equal(a.ids(split), b.ids(split)), split
        assert np.array_equal(a.labels(split), b.labels(split)), split


def test_random_bytes(tmp_path):
    path = tmp_path / "random.bin"
    path.write_bytes(b"\xe9" + random.Random(0).randbytes(4095))
    assert refused(tmp_path, "criteo", path) == (
        f"{path}:1: not UTF-8 text (byte 0xE9 at offset 0); is this the right file?")


def test_utf16_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(CSV_TEXT.encode("utf-16"))
    assert refused(tmp_path, CSV_SPEC, path) == (
        f"{path}:1: UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8 and "
        "try again")


def test_utf16_without_a_byte_order_mark(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(CSV_TEXT.encode("utf-16-le"))
    assert refused(tmp_path, CSV_SPEC, path) == (
        f"{path}:1: not text (a NUL byte at offset 1: UTF-16 or binary data); is this the "
        "right file?")


def test_latin1_byte_deep_in_a_large_file(tmp_path):
    """Past the first 64 KiB the bytes are checked as pyarrow reads them: same message."""
    lines = [f"{i % 2},v{i % 7},{i}" for i in range(20000)]
    lines[15000] = "1,caf\xe9,3"
    path = tmp_path / "t.csv"
    body = ("y,a,n\n" + "\n".join(lines) + "\n").encode("latin-1")
    path.write_bytes(body)
    offset = body.index(b"\xe9")
    assert offset > textin.HEAD_BYTES
    assert refused(tmp_path, CSV_SPEC, path) == (
        f"{path}:15002: not UTF-8 text (byte 0xE9 at offset {offset}); is this the right file?")


def test_bad_header_bytes_are_not_echoed(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"y,\xff\xfe\x00a\n1,x\n")
    assert refused(tmp_path, CSV_SPEC, path) == (
        f"{path}:1: not UTF-8 text (byte 0xFF at offset 2); is this the right file?")


def test_header_only_csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("y,a,n\n")
    assert refused(tmp_path, CSV_SPEC, path) == f"{path}: no data rows (expected at least one)"


def test_damaged_gzip(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(CSV_TEXT.encode())[:-12])
    assert refused(tmp_path, CSV_SPEC, path) == f"{path}: cannot read the input (Truncated " \
                                                "compressed stream)"


def test_damaged_gzip_past_the_head(tmp_path):
    """A large archive cut short fails while parsing: the same one-line error."""
    rng = np.random.default_rng(0)
    text = "y,a,n\n" + "".join(f"{k % 2},{k},{k}\n" for k in rng.integers(0, 10**9, 60000))
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(text.encode(), compresslevel=1)[:-4096])
    assert refused(tmp_path, CSV_SPEC, path) == f"{path}: cannot read the input (Truncated " \
                                                "compressed stream)"


@pytest.mark.parametrize("variant", ["bom", "crlf", "bom+crlf", "gzip", "bz2", "gzip+crlf"])
def test_csv_variants_are_the_same_dataset(tmp_path, variant):
    text = CSV_TEXT.replace("\n", "\r\n") if "crlf" in variant else CSV_TEXT
    data = ("\ufeff" + text if "bom" in variant else text).encode()
    name = "t.csv"
    if "gzip" in variant:
        data, name = gzip.compress(data), "t.csv.gz"
    if "bz2" in variant:
        data, name = bz2.compress(data), "t.csv.bz2"
    (tmp_path / name).write_bytes(data)
    (tmp_path / "plain.csv").write_text(CSV_TEXT)
    plain = prepare_dataset(CSV_SPEC, tmp_path / "plain.csv", tmp_path / "p", quiet=True)
    other = prepare_dataset(CSV_SPEC, tmp_path / name, tmp_path / "o", quiet=True)
    same_dataset(plain, other)
    assert {"x", "é", "z", "日本"} <= set(plain.vocabularies["a"])


@pytest.mark.parametrize("variant", ["bom", "crlf", "gzip"])
@pytest.mark.parametrize("workers", [1, 3])
def test_criteo_variants_are_the_same_dataset(tmp_path, variant, workers):
    raw = (FIX / "criteo_small.txt").read_bytes()
    data = {"bom": b"\xef\xbb\xbf" + raw, "crlf": raw.replace(b"\n", b"\r\n"),
            "gzip": gzip.compress(raw)}[variant]
    name = "c.txt.gz" if variant == "gzip" else "c.txt"
    (tmp_path / name).write_bytes(data)
    plain = prepare_dataset("criteo", FIX / "criteo_small.txt", tmp_path / "p", quiet=True,
                            workers=1)
    other = prepare_dataset("criteo", tmp_path / name, tmp_path / "o", quiet=True,
                            workers=workers)
    same_dataset(plain, other)


def test_gzip_of_a_shared_dataset_when_present(tmp_path):
    """A real Criteo sample, plain and gzipped, when the shared data is on this machine."""
    sample = Path("/work/shared/data/criteo/train_head10000.txt")
    if not sample.is_file():
        pytest.skip(f"{sample} is not on this machine")
    head = b"".join(sample.open("rb").readlines()[:3000])
    (tmp_path / "c.txt").write_bytes(head)
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress(head))
    same_dataset(prepare_dataset("criteo", tmp_path / "c.txt", tmp_path / "p", quiet=True),
                 prepare_dataset("criteo", tmp_path / "c.txt.gz", tmp_path / "g", quiet=True))


def test_checked_text_reads_any_valid_utf8_in_any_pieces(tmp_path):
    """Multi-byte characters cut between reads are fine; the first bad byte is found at its
    exact offset and line, whatever the read sizes."""
    rng = random.Random(7)
    alphabet = ["a", "b", ",", "\n", "é", "日", "€", "😀"]
    for trial in range(30):
        chars = [rng.choice(alphabet) for _ in range(rng.randint(1, 400))]
        text = "".join(chars).encode()
        path = tmp_path / f"t{trial}.txt"
        cut = len("".join(chars[:rng.randint(0, len(chars))]).encode())  # between characters
        bad = trial % 2 == 1
        path.write_bytes(text[:cut] + (b"\xff" if bad else b"") + text[cut:])
        stream = textin.CheckedText(path)
        got = b""
        try:
            while True:
                piece = stream.read(rng.randint(1, 7))
                if not piece:
                    break
                got += piece
        except DataError as exc:
            assert bad
            line = text[:cut].count(b"\n") + 1
            assert str(exc) == (f"{path}:{line}: not UTF-8 text (byte 0xFF at offset {cut}); "
                                "is this the right file?")
        else:
            assert not bad and got == text
        finally:
            stream.close()


def test_a_character_cut_at_the_end_of_the_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("a,é".encode()[:-1])
    stream = textin.CheckedText(path)
    with pytest.raises(DataError) as err:
        while stream.read(2):
            pass
    stream.close()
    assert str(err.value) == f"{path}:1: not UTF-8 text (byte 0xC3 at offset 2); is this the " \
                             "right file?"


def test_cli_random_bytes_is_one_clear_line(tmp_path, capfd):
    path = tmp_path / "random.bin"
    path.write_bytes(bytes([0xE9]) + random.Random(1).randbytes(4095))
    code = main(["data", "prepare", "--preset", "criteo", "--input", str(path), "--out",
                 str(tmp_path / "out"), "-q"])
    out, err = capfd.readouterr()  # file-descriptor level: also what pyarrow would print
    assert code == 2 and out == ""
    assert err == f"error: {path}:1: not UTF-8 text (byte 0xE9 at offset 0); is this the right " \
                  "file?\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random.bin"]


def test_header_line_drops_the_byte_order_mark_and_checks_utf8(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'\xef\xbb\xbf"id",x\r\n1,2\n')
    assert textin.header_line(path, ",") == ["id", "x"]
    path.write_bytes(b"\xef\xbb\xbfid,caf\xe9\n1,2\n")  # (check_head sees this first in prepare)
    with pytest.raises(DataError) as err:
        textin.header_line(path, ",")
    assert str(err.value) == f"{path}:1: not UTF-8 text (byte 0xE9 at offset 9); is this the " \
                             "right file?"


BAD_INPUTS = {  # name: (file name, bytes, preset or spec)
    "random bytes": ("r.bin", bytes([0xE9]) + random.Random(2).randbytes(2047), "criteo"),
    "utf-16": ("t.csv", CSV_TEXT.encode("utf-16"), CSV_SPEC),
    "utf-16 without a mark": ("t.csv", CSV_TEXT.encode("utf-16-le"), CSV_SPEC),
    "latin-1": ("t.csv", CSV_TEXT.encode("latin-1", "replace").replace(b"?", b"\xe9"), CSV_SPEC),
    "header only": ("t.csv", b"y,a,n\r\n", CSV_SPEC),
    "empty": ("t.csv", b"", CSV_SPEC),
    "damaged gzip": ("t.csv.gz", gzip.compress(CSV_TEXT.encode())[:20], CSV_SPEC),
    "misnamed column": ("t.csv", CSV_TEXT.replace("y,a,n", "y,a,N").encode(), CSV_SPEC),
    "short line": ("t.csv", (CSV_TEXT + "1,x\n").encode(), CSV_SPEC),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_every_refused_input_is_one_line_exit_2_and_nothing_written(tmp_path, capfd, case):
    name, data, spec = BAD_INPUTS[case]
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / name
    path.write_bytes(data)
    if isinstance(spec, dict):
        (tmp_path / "in" / "spec.yaml").write_text(yaml.safe_dump(spec))
        source = ["--spec", str(tmp_path / "in" / "spec.yaml")]
    else:
        source = ["--preset", spec]
    code = main(["data", "prepare", *source, "--input", str(path), "--out",
                 str(tmp_path / "out" / "ds"), "-q"])
    out, err = capfd.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"error: {path}") and err.count("\n") == 1, err
    assert err[:-1].isprintable()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # not even the output's parent
