"""Counter-based randomness: a uniform number per (seed, file, line), whatever the order
or the process that draws it (splits stay the same with any number of workers)."""

from __future__ import annotations

import numpy as np


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def line_uniforms(seed: int, file_index: int, lines: np.ndarray) -> np.ndarray:
    """float64 (rows,) in [0, 1): one draw per data line of input file ``file_index``."""
    key = mix64(np.array([(seed * 1_000_003 + file_index) & 0xFFFFFFFFFFFFFFFF],
                         dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        h = mix64(lines.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + key)
    return (h >> np.uint64(11)).astype(np.float64) / 2.0**53


_K_LEN = np.uint64(0x9E3779B97F4A7C15)
_K_WORD = np.uint64(0xD6E8FEB86659FD93)
_LOW_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [2**64 - 1], dtype=np.uint64)


def _words(data: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """uint64 (n,): bytes ``[start, start+8)`` of each string, zero past its length
    (little-endian), i.e. the string itself when it is at most 8 bytes long."""
    padded = np.zeros(len(data) + 8, dtype=np.uint8)
    padded[:len(data)] = data
    # every byte position as the start of an (unaligned) little-endian uint64
    at = np.ndarray((len(data) + 1,), dtype="<u8", buffer=padded, strides=(1,))
    return at[starts] & _LOW_BYTES[np.minimum(lens, 8)]


def first_words(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """uint64 (n,): the first 8 bytes of each string (zero-padded), ``offsets`` (n+1,)
    into ``data`` uint8 (the layout of an arrow string array)."""
    return _words(data, offsets[:-1].astype(np.int64), np.diff(offsets).astype(np.int64))


def string_hashes(offsets: np.ndarray, data: np.ndarray, first: np.ndarray) -> np.ndarray:
    """uint64 (n,) hash of each string (``offsets``, ``data`` as in :func:`first_words`,
    ``first`` their first words): all its 8-byte words and its length, mixed. Not stable
    across versions and not collision-free: callers compare the strings themselves."""
    starts = offsets[:-1].astype(np.int64)
    lens = np.diff(offsets).astype(np.int64)
    with np.errstate(over="ignore"):
        out = mix64(first + lens.astype(np.uint64) * _K_LEN)
        long_ = np.flatnonzero(lens > 8)
        if len(long_):
            nwords = (lens[long_] + 7) // 8
            first = np.cumsum(nwords) - nwords
            owner = np.repeat(np.arange(len(long_)), nwords)
            k = np.arange(int(nwords.sum()), dtype=np.int64) - first[owner]
            words = _words(data, starts[long_][owner] + 8 * k, lens[long_][owner] - 8 * k)
            mixed = mix64(words ^ (k.astype(np.uint64) * _K_WORD))
            total = np.add.reduceat(mixed, first)
            out[long_] = mix64(total + lens[long_].astype(np.uint64) * _K_LEN)
    return out
