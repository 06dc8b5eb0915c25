"""An exact (tag, string) -> id table worked in numpy, a block of strings at a time.

Preparation numbers the distinct texts of each field in order of first appearance. Doing
that with a Python dict costs a Python object and a dict probe per value; this table does
it with a few numpy passes over the *distinct* strings of a block, all fields at once (the
tag is the field): it hashes them (:func:`shaver.data.hashing.string_hashes`), probes a
bucketed open-addressing table (8 slots a bucket, each with a one-byte fingerprint of
the hash, compared 8 at a time as one uint64; at most half full; a full bucket
overflows into the next) for all of them together, and appends the new ones.

The strings themselves are kept, as bytes in one growing buffer with offsets (the layout
of an arrow string array) with their first 8 bytes as one number, so a match is always
exact: an equal hash only counts when the tag, the length and the first 8 bytes agree
and, for strings longer than 8 bytes, all the bytes. A hash collision therefore only
costs a comparison; it never merges two values, whatever the hash function. Memory: about
the string's length + 60 to 90 bytes a distinct value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shaver.data import hashing

LANES = 8
_K_TAG = np.uint64(0xC2B2AE3D27D4EB4F)


def arrow_strings(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets int64 (n+1,) starting at 0, data uint8)`` of a pyarrow string or binary
    array without nulls."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    n = len(arr)
    _, off_buf, data_buf = arr.buffers()[:3]
    if off_buf is None or n == 0:
        return np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    width = 8 if large else 4
    offsets = np.frombuffer(off_buf, dtype=np.int64 if large else np.int32, count=n + 1,
                            offset=arr.offset * width).astype(np.int64)
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buf, dtype=np.uint8)[lo:hi] if hi > lo else np.zeros(0, np.uint8)
    return offsets - lo, data


def concat_strings(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One ``(offsets, data)`` from several (each with offsets starting at 0)."""
    if not parts:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    ends = np.cumsum([int(o[-1]) for o, _ in parts])
    offsets = np.concatenate([np.zeros(1, np.int64)] + [
        o[1:] + (ends[i - 1] if i else 0) for i, (o, _) in enumerate(parts)])
    return offsets, np.concatenate([d for _, d in parts])


def ragged_gather(data: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(bytes, owner)``: the concatenated ``data[starts[i]:starts[i]+lens[i]]`` and for
    each byte its ``i``."""
    first = np.cumsum(lens) - lens
    owner = np.repeat(np.arange(len(lens)), lens)
    within = np.arange(int(lens.sum()), dtype=np.int64) - first[owner]
    return data[starts[owner] + within], owner


class StringTable:
    """Distinct (tag, string) keys with ids ``0..len-1`` in order of insertion."""

    def __init__(self) -> None:
        self.size = 0
        self._buckets = 1 << 10
        self._new_buckets()
        self._hashes = np.zeros(256, dtype=np.uint64)
        self._rec = np.zeros((256, 2), dtype=np.uint64)  # first 8 bytes, len << 32 | tag
        self._offsets = np.zeros(257, dtype=np.int64)
        self._data = np.zeros(4096, dtype=np.uint8)
        self.hash_fn = hashing.string_hashes  # tests swap in a colliding one

    def __len__(self) -> int:
        return self.size

    def __getstate__(self) -> dict:
        """Pickled without the spare room of the per-key arrays (parts go between
        processes)."""
        state = dict(self.__dict__)
        end = int(self._offsets[self.size])
        state.update(_hashes=self._hashes[:self.size], _rec=self._rec[:self.size],
                     _offsets=self._offsets[:self.size + 1], _data=self._data[:end])
        return state

    @property
    def tags(self) -> np.ndarray:
        """int32 (len,) tag of each key."""
        return (self._rec[:self.size, 1] & np.uint64(0xFFFFFFFF)).astype(np.int32)

    def ids(self, offsets: np.ndarray, data: np.ndarray, tags: np.ndarray) -> np.ndarray:
        """int64 (n,) ids of ``n`` DISTINCT keys: strings in arrow layout (``offsets``
        (n+1,) from 0 into ``data`` uint8) with int ``tags`` (n,) in [0, 2**31); keys not
        in the table get the next ids, in order."""
        n = len(offsets) - 1
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        tags = np.asarray(tags, dtype=np.int64)
        self._reserve(n)
        first = hashing.first_words(offsets, data)
        rec = np.empty((n, 2), dtype=np.uint64)
        rec[:, 0] = first
        rec[:, 1] = (np.diff(offsets) << 32 | tags).astype(np.uint64)
        with np.errstate(over="ignore"):
            h = hashing.mix64(self.hash_fn(offsets, data, first) ^ (rec[:, 1] * _K_TAG))
        found = self._find(h, offsets, data, rec)
        new = np.flatnonzero(found < 0)
        if len(new):
            found[new] = self._append(h[new], offsets, data, rec[new], new)
        return found

    def raw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(offsets, data, tags)`` copies of all keys in id order (compact; picklable)."""
        end = int(self._offsets[self.size])
        return self._offsets[:self.size + 1].copy(), self._data[:end].copy(), self.tags

    def texts(self, ids: np.ndarray) -> list[str]:
        """The strings of ids ``ids`` as Python str (UTF-8)."""
        import pyarrow as pa

        ids = np.asarray(ids, dtype=np.int64)
        lens = self._offsets[ids + 1] - self._offsets[ids]
        data, _ = ragged_gather(self._data, self._offsets[ids], lens)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        arr = pa.Array.from_buffers(pa.large_binary(), len(ids),
                                    [None, pa.py_buffer(offsets), pa.py_buffer(data)])
        return [b.decode("utf-8") for b in arr.to_pylist()]

    # -- internals ---------------------------------------------------------------------
    def _new_buckets(self) -> None:
        # per bucket: 8 one-byte fingerprints in one uint64 (0 = empty lane), 8 ids
        self._fp = np.zeros(self._buckets, dtype=np.uint64)
        self._bid = np.zeros(self._buckets * LANES, dtype=np.int32)
        self._fill = np.zeros(self._buckets, dtype=np.int64)

    def _reserve(self, extra: int) -> None:
        need = self.size + extra
        if 2 * need <= self._buckets * LANES:
            return
        while 2 * need > self._buckets * LANES:
            self._buckets *= 4  # fewer rebuilds; the table is 1/8 to 1/2 full
        self._new_buckets()
        self._place(np.arange(self.size, dtype=np.int64))

    def _place(self, ids: np.ndarray) -> None:
        """Put stored ids into the first bucket with a free slot along their probe
        sequence (home bucket, then the next ones). Ids that want the same bucket in a
        round take turns (one a round; which one does not matter: a key's id never
        depends on its slot)."""
        mask = self._buckets - 1
        h = self._hashes[ids]
        bucket = (h & np.uint64(mask)).astype(np.int64)
        fp = _fingerprint(h).astype(np.uint8)
        lanes = self._fp.view(np.uint8)
        claim = np.empty(self._buckets, dtype=np.int64)
        while len(ids):
            lane = self._fill[bucket]
            order = np.arange(len(ids))
            claim[bucket] = order
            won = (claim[bucket] == order) & (lane < LANES)
            slot = bucket[won] * LANES + lane[won]
            lanes[slot] = fp[won]
            self._bid[slot] = ids[won]
            self._fill[bucket[won]] += 1
            rest = ~won
            ids, fp, bucket, lane = ids[rest], fp[rest], bucket[rest], lane[rest]
            full = lane >= LANES
            bucket[full] = (bucket[full] + 1) & mask

    def _find(self, h: np.ndarray, offsets: np.ndarray, data: np.ndarray,
              rec: np.ndarray) -> np.ndarray:
        """int64 (n,) id of each key, -1 when absent."""
        out = np.full(len(h), -1, dtype=np.int64)
        if self.size == 0:
            return out
        mask = self._buckets - 1
        active = np.arange(len(h))
        bucket = (h & np.uint64(mask)).astype(np.int64)
        spread = _fingerprint(h) * _ONES
        while len(active):
            row = self._fp[bucket]
            flags = _zero_bytes(row ^ spread)
            full = _zero_bytes(row) == 0
            hit = np.flatnonzero(flags)
            flags = flags[hit]
            while len(hit):  # lanes whose fingerprint matches, lowest first
                low = flags & (~flags + np.uint64(1))
                lane = (np.frexp(low.astype(np.float64))[1] - 1) >> 3
                cand = self._bid[bucket[hit] * LANES + lane].astype(np.int64)
                q = active[hit]
                same = self._same(cand, q, offsets, data, rec)
                out[q[same]] = cand[same]
                flags ^= low
                more = ~same & (flags != 0)
                hit, flags = hit[more], flags[more]
            go_on = (out[active] < 0) & full
            active, bucket, spread = active[go_on], (bucket[go_on] + 1) & mask, spread[go_on]
        return out

    def _same(self, cand: np.ndarray, q: np.ndarray, offsets: np.ndarray, data: np.ndarray,
              rec: np.ndarray) -> np.ndarray:
        """bool: stored key ``cand[i]`` equals query key ``q[i]``."""
        mine = np.take(self._rec, cand, axis=0)
        theirs = np.take(rec, q, axis=0)
        same = (mine[:, 0] == theirs[:, 0]) & (mine[:, 1] == theirs[:, 1])
        lens = (theirs[:, 1] >> np.uint64(32)).astype(np.int64)
        check = np.flatnonzero(same & (lens > 8))
        if len(check):
            c, lc = cand[check], lens[check]
            stored, owner = ragged_gather(self._data, self._offsets[c], lc)
            query, _ = ragged_gather(data, offsets[q[check]], lc)
            differs = np.zeros(len(check), dtype=bool)
            differs[owner[stored != query]] = True
            same[check] = ~differs
        return same

    def _append(self, h: np.ndarray, offsets: np.ndarray, data: np.ndarray,
                rec: np.ndarray, which: np.ndarray) -> np.ndarray:
        """Store keys ``which`` (indices into ``offsets``) with hashes ``h`` and records
        ``rec``; their ids."""
        m = len(which)
        lens = offsets[which + 1] - offsets[which]
        ids = np.arange(self.size, self.size + m, dtype=np.int64)
        self._hashes = _grown(self._hashes, self.size + m)
        self._rec = _grown(self._rec, self.size + m)
        self._offsets = _grown(self._offsets, self.size + m + 1)
        new = slice(self.size, self.size + m)
        self._hashes[new] = h
        self._rec[new] = rec
        end = int(self._offsets[self.size])
        self._offsets[self.size + 1:self.size + m + 1] = end + np.cumsum(lens)
        total = int(lens.sum())
        self._data = _grown(self._data, end + total)
        if m == len(offsets) - 1:  # all of them: one copy
            self._data[end:end + total] = data[:total]
        elif total:
            self._data[end:end + total] = ragged_gather(data, offsets[which], lens)[0]
        self.size += m
        self._place(ids)
        return ids


_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)


def _fingerprint(h: np.ndarray) -> np.ndarray:
    """uint64 in 1..255 from a hash's top bits (0 marks an empty lane)."""
    return (h >> np.uint64(56)) % np.uint64(255) + np.uint64(1)


def _zero_bytes(x: np.ndarray) -> np.ndarray:
    """Per uint64, the high bit of each byte that may be zero: every zero byte is flagged
    (bytes above a zero byte may be flagged too); nonzero iff some byte is zero."""
    with np.errstate(over="ignore"):
        return (x - _ONES) & ~x & _HIGHS


def _grown(arr: np.ndarray, need: int) -> np.ndarray:
    """``arr`` or a copy at least twice as long when it is shorter than ``need``."""
    if need <= len(arr):
        return arr
    out = np.zeros((max(need, 2 * len(arr)),) + arr.shape[1:], dtype=arr.dtype)
    out[:len(arr)] = arr
    return out
