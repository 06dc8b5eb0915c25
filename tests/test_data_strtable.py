"""The numpy (tag, string) -> id table behind preparation's vocabularies."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shaver.data.hashing import first_words, string_hashes
from shaver.data.strtable import StringTable, arrow_strings, concat_strings

TEXT = st.text(alphabet=st.sampled_from(["a", "b", "\x00", "é", "9", " "]), max_size=20)
BATCHES = st.lists(st.lists(st.tuples(st.integers(0, 2), TEXT), max_size=60), max_size=8)


def _dict_ids(batches):
    """What a Python dict numbering keys by first appearance gives."""
    ref, out = {}, []
    for batch in batches:
        out.append([ref.setdefault(k, len(ref)) for k in dict.fromkeys(batch)])
    return ref, out


def _table_ids(table, batches):
    out = []
    for batch in batches:
        keys = list(dict.fromkeys(batch))
        offsets, data = arrow_strings(pa.array([s for _, s in keys], pa.string()))
        out.append(table.ids(offsets, data, np.array([t for t, _ in keys])).tolist())
    return out


def _constant_hash(offsets, data, first):
    return np.zeros(len(offsets) - 1, dtype=np.uint64)


def _length_hash(offsets, data, first):  # collides for every pair of equal lengths
    return np.diff(offsets).astype(np.uint64) % 3


@settings(max_examples=60, deadline=None)
@given(BATCHES, st.sampled_from([None, _constant_hash, _length_hash]))
def test_ids_match_a_dict_whatever_the_hash(batches, hash_fn):
    """Exact keys: with a hash that collides for everything, ids are still those of a
    dict (collisions only lengthen the search, they never merge two keys)."""
    table = StringTable()
    if hash_fn is not None:
        table.hash_fn = hash_fn
    ref, expected = _dict_ids(batches)
    assert _table_ids(table, batches) == expected
    assert len(table) == len(ref)
    assert table.texts(np.arange(len(table))) == [s for _, s in ref]
    assert table.tags.tolist() == [t for t, _ in ref]


def test_growth_keeps_every_id():
    rng = np.random.default_rng(0)
    keys = [(0, f"{x:x}") for x in rng.integers(0, 2**40, 20_000)]
    batches = [keys[i:i + 3000] for i in range(0, len(keys), 3000)] + [keys[::7]]
    assert _table_ids(StringTable(), batches) == _dict_ids(batches)[1]


def test_long_strings_that_differ_only_at_the_end():
    a, b = "x" * 40 + "a", "x" * 40 + "b"
    table = StringTable()
    table.hash_fn = _constant_hash
    assert _table_ids(table, [[(0, a)], [(0, b), (0, a)]]) == [[0], [1, 0]]


def test_arrow_strings_of_a_slice_and_of_binary():
    arr = pa.array(["zz", "a", "", "bcd"])[1:]
    offsets, data = arrow_strings(arr)
    assert offsets.tolist() == [0, 1, 1, 4] and bytes(data) == b"abcd"
    offsets, data = arrow_strings(pa.array([b"\xff", b"q"], pa.binary()))
    assert offsets.tolist() == [0, 1, 2] and bytes(data) == b"\xffq"
    joined = concat_strings([arrow_strings(pa.array(["ab"])), arrow_strings(pa.array(["", "c"]))])
    assert joined[0].tolist() == [0, 2, 2, 3] and bytes(joined[1]) == b"abc"


@pytest.mark.parametrize("texts", [["", "a", "a\x00", "abcdefgh", "abcdefgh\x00", "é" * 9]])
def test_first_words_and_hashes_tell_lengths_apart(texts):
    offsets, data = arrow_strings(pa.array(texts, pa.string()))
    first = first_words(offsets, data)
    assert first[1] == first[2] == ord("a")  # same bytes, zero-padded ...
    hashes = string_hashes(offsets, data, first)
    assert len(set(hashes.tolist())) == len(texts)  # ... but the length is hashed too
