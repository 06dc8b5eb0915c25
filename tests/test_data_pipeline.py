"""Preparation's fast paths give the same bytes as the plain ones: arrow pieces grouped
into blocks, the background reader thread, and the hashed vocabulary table."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shaver.data import readers, strtable
from shaver.data.prepare import prepare_dataset
from shaver.data.stages import prefetched
from shaver.data.synthetic import synth_criteo

FIX = Path(__file__).parent / "fixtures" / "data"


def tree_digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "train.txt"
    synth_criteo(path, 3000, seed=3)  # about 700 KB
    return path


def test_grouped_pieces_and_block_sizes_give_identical_output(tmp_path, synth, monkeypatch):
    ref = prepare_dataset("criteo", synth, tmp_path / "ref", quiet=True, workers=1)
    monkeypatch.setattr(readers, "PARSE_BYTES", 16 << 10)  # several pieces a block
    grouped = prepare_dataset("criteo", synth, tmp_path / "g", quiet=True, workers=1,
                              block_bytes=100 << 10)
    small = prepare_dataset("criteo", synth, tmp_path / "s", quiet=True, workers=1,
                            block_bytes=5 << 10)
    parts = prepare_dataset("criteo", synth, tmp_path / "p", quiet=True, workers=3,
                            block_bytes=100 << 10)
    assert ref.num_rows("all") == 3000
    assert (tree_digest(ref.path) == tree_digest(grouped.path) == tree_digest(small.path)
            == tree_digest(parts.path))


def _constant_hash(offsets, data, first):
    return np.zeros(len(offsets) - 1, dtype=np.uint64)


@pytest.mark.parametrize("preset,fixture", [("criteo", "criteo_small.txt"),
                                            ("avazu", "avazu_small.csv")])
def test_colliding_hashes_change_nothing(tmp_path, monkeypatch, preset, fixture):
    """Every key hashing alike: ids come from exact comparisons, so the output is the same."""
    ref = prepare_dataset(preset, FIX / fixture, tmp_path / "ref", quiet=True)
    monkeypatch.setattr(strtable.hashing, "string_hashes", _constant_hash)
    assert strtable.StringTable().hash_fn is _constant_hash
    bad = prepare_dataset(preset, FIX / fixture, tmp_path / "bad", quiet=True, workers=2)
    assert tree_digest(ref.path) == tree_digest(bad.path)


def test_prefetched_keeps_order_and_raises_in_place():
    def gen():
        yield 1
        yield 2
        raise ValueError("third")

    got = []
    with pytest.raises(ValueError, match="third"):
        for x in prefetched(gen()):
            got.append(x)
    assert got == [1, 2]


def test_prefetched_stops_the_reader_when_the_consumer_stops():
    closed = threading.Event()

    def gen():
        try:
            yield from range(10**9)
        finally:
            closed.set()

    for x in prefetched(gen(), depth=1):
        if x == 3:
            break
    assert closed.wait(5)
    assert not any(t.name == "shaver-reader" for t in threading.enumerate())


def test_side_table_that_is_not_utf8(tmp_path):
    from shaver.errors import DataError

    profile = tmp_path / "profile.txt"
    profile.write_bytes(b"490234\t1\t5\n7\t\xff\t1\n")
    with pytest.raises(DataError) as err:
        prepare_dataset("kdd12", FIX / "kdd12_small.txt", tmp_path / "k", quiet=True,
                        joins={"profile": profile})
    assert str(err.value) == (f"{profile}:2: not UTF-8 text (byte 0xFF at offset 13); is this "
                              "the right file?")
    assert not (tmp_path / "k").exists()


def test_threaded_stages_raise_the_first_bad_line_in_file_order(tmp_path):
    """A later block's parse error is found first by the reader thread, but the earlier
    block's bad value is the error reported (as when reading in one thread)."""
    from shaver.errors import DataError

    lines = (FIX / "criteo_small.txt").read_text().splitlines()
    cells = lines[4].split("\t")
    cells[1] = "zz"
    lines[4] = "\t".join(cells)
    lines[30] = "0\t1\t2"
    path = tmp_path / "in.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"^{path}:5: field 'I1': 'zz' is not an integer"):
        prepare_dataset("criteo", path, tmp_path / "o", quiet=True, workers=1,
                        block_bytes=1024)
    assert not (tmp_path / "o").exists()


def test_non_ascii_values_round_trip(tmp_path):
    spec = {"input": {"format": "csv", "header": True}, "label": {"column": "y"},
            "fields": ["a"], "min_count": 1}
    path = tmp_path / "t.csv"
    path.write_text("y,a\n1,é\n0,x\n1,é\n0,日本\n", encoding="utf-8")
    spec["split"] = {"method": "random", "fractions": [1.0, 0.0, 0.0], "seed": 0}
    ds = prepare_dataset(spec, path, tmp_path / "o", quiet=True)
    assert ds.vocabularies["a"] == ["__OOV__", "é", "x", "日本"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="0123456789-+ _٣a", max_size=21), max_size=12, unique=True))
def test_plain_integer_parser_agrees_with_python_int(texts):
    """The byte-level parser either reads a text as Python's int does or declines."""
    import pyarrow as pa

    from shaver.data.numbers import _plain_ints

    got = _plain_ints(pa.array(texts, pa.string()))
    if got is None:
        return
    numbers, missing = got
    for t, x, m in zip(texts, numbers.tolist(), missing.tolist()):
        assert m == (t == "")
        if t:
            assert x == int(t)


def test_criteo_tokens_of_plain_and_unusual_integers():
    import pyarrow as pa

    from shaver.data.tokens import criteo_codes, distinct_texts

    texts = ["", "0", "-3", "+7", "007", "2", "3", "1000", " 5", "1_000"]
    fast = criteo_codes(pa.array(texts[:8], pa.string()))
    slow = criteo_codes(texts[:8])
    assert fast.tolist() == slow.tolist()
    assert distinct_texts(criteo_codes(texts))[0] == ["", "-3", "0", "2", "L1", "L2", "L3", "L47"]


def test_skipped_bad_value_of_a_quantile_field(tmp_path):
    """The skipped row's text never reaches the bin edges (it used to stop preparation)."""
    path = tmp_path / "t.csv"
    path.write_text("y,a,n\n1,x,1.5\n0,y,zz\n1,x,3\n0,z,2\n")
    spec = {"input": {"format": "csv", "header": True}, "label": {"column": "y"},
            "fields": ["a", {"name": "n", "kind": "numeric", "discretiser": "quantile",
                             "bins": 2}],
            "split": {"method": "random", "fractions": [1.0, 0.0, 0.0], "seed": 0}}
    ds = prepare_dataset(spec, path, tmp_path / "o", quiet=True, skip_bad_lines=True)
    assert ds.meta["skipped_lines"] == 1
    assert ds.meta["skipped_examples"] == [f"{path}:3: field 'n': 'zz' is not a number"]
    assert ds.num_rows("all") == 3 and ds.meta["quantile_edges"]["n"] == [2.0]
