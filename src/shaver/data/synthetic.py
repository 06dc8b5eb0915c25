"""Synthetic raw data in Criteo's text format, for scale benchmarks (never quality claims).

Rows have Criteo's layout (label, I1-I13, C1-C26, tab separated, empty = missing) and
realistic statistics: categorical values drawn Zipf-like from Criteo-sized vocabularies
(up to ~10M values per field at ``scale=1``), integers drawn log-normally with Criteo's
missing rates (some negative), and labels drawn from a hidden model: per-value weights
plus factorised interactions between random field pairs, its bias set so that about 25%
of rows are positive. The hidden model's own AUC on the generated labels is reported: no
model trained on the file can be expected to beat it.

Everything derives from ``seed``: weights are hashes of (seed, field, value), draws come
from one ``np.random.default_rng(seed)`` stream. Vectorised numpy; pyarrow writes the text.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shaver.data.hashing import mix64
from shaver.data.readers import arrow
from shaver.errors import DataError
from shaver.fileio import write_text_atomic
from shaver.progress import progress_bar

log = logging.getLogger(__name__)

#: Distinct values of C1-C26 in the full Kaggle Criteo train set.
CRITEO_CARDINALITIES = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
                        8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15,
                        286181, 105, 142572)
CAT_MISSING = (0, 0, .03, .03, 0, .12, 0, 0, 0, 0, 0, .03, 0, 0, 0, .03, 0, 0, .44, .44, .03,
               .76, 0, .03, .44, .44)
INT_MISSING = (.45, 0, .21, .22, .03, .22, .04, .0005, .04, .45, .04, .77, .22)
INT_LOG_MEAN = (0.8, 3.0, 2.3, 1.8, 8.0, 3.5, 1.5, 2.5, 3.8, 0.3, 1.0, 0.3, 1.8)
INT_LOG_SD = (1.2, 2.0, 1.3, 1.0, 1.8, 2.0, 1.5, 1.0, 1.4, 0.6, 1.0, 1.0, 1.0)
INT_SHIFT = (0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # I2 takes -1..-3 like Criteo's I2
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _normal(seed: int, field: int, key: np.ndarray, k: int = 0) -> np.ndarray:
    """A standard normal per (seed, field, key, k), by hashing (Box-Muller)."""
    base = np.uint64((seed * 1_000_003 + field * 7919 + k * 104_729) & 0xFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        h1 = mix64(key.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + base)
        h2 = mix64(h1 + np.uint64(0x632BE59BD9B4E019))
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    u2 = (h2 >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _zipf_ranks(rng: np.random.Generator, n: int, card: int, s: float) -> np.ndarray:
    """int64 (n,) ranks in [0, card) with P(rank r) ~ (r+1)^-s (continuous inverse CDF)."""
    u = rng.random(n)
    a = 1.0 - s
    x = (1.0 + u * (float(card) ** a - 1.0)) ** (1.0 / a)
    return np.minimum(x.astype(np.int64) - 1, card - 1).clip(0)


def _hex8(values: np.ndarray) -> np.ndarray:
    """uint32 (n,) -> 'S8' (n,) lowercase hex."""
    nibbles = (values[:, None] >> np.arange(28, -4, -4, dtype=np.uint32)) & 0xF
    return HEX[nibbles].view("S8").ravel()


@dataclass
class _Model:
    seed: int
    pairs: np.ndarray  # (p, 2) field indices into the 39 fields
    main_sd: np.ndarray  # (39,)
    pair_scale: float
    bias: float = 0.0

    def logits(self, keys: np.ndarray) -> np.ndarray:
        """keys int64 (n, 39): value identities (-1 = missing) -> float64 (n,) logits."""
        out = np.full(len(keys), self.bias)
        for f in range(keys.shape[1]):
            out += self.main_sd[f] * _normal(self.seed, f, keys[:, f] + 1)
        for f, g in self.pairs:
            for k in range(1, 3):
                out += self.pair_scale * _normal(self.seed, f, keys[:, f] + 1, k) * \
                    _normal(self.seed, g, keys[:, g] + 1, k)
        return out


class _Generator:
    def __init__(self, seed: int, scale: float):
        self.rng = np.random.default_rng(seed)
        self.cards = [max(2, int(round(c * scale))) for c in CRITEO_CARDINALITIES]
        self.zipf_s = 1.05 + 0.25 * np.random.default_rng([seed, 1]).random(26)
        self.salts = np.random.default_rng([seed, 2]).integers(0, 2**32, 26, dtype=np.uint64)
        prng = np.random.default_rng([seed, 3])
        pairs = np.array([prng.choice(39, 2, replace=False) for _ in range(24)])
        main_sd = 0.08 + 0.2 * prng.random(39)
        self.model = _Model(seed, pairs, main_sd, pair_scale=0.12)

    def chunk(self, n: int) -> tuple[list[Any], np.ndarray]:
        """Columns (label, I1-I13 int64 with missing mask, C1-C26 uint32 with mask), logits."""
        rng = self.rng
        keys = np.empty((n, 39), dtype=np.int64)
        ints = []
        for j in range(13):
            v = np.floor(np.exp(rng.normal(INT_LOG_MEAN[j], INT_LOG_SD[j], n))).astype(np.int64)
            v -= INT_SHIFT[j] * (rng.random(n) < 0.1)
            miss = rng.random(n) < INT_MISSING[j]
            ints.append((v, miss))
            bucket = np.where(v > 2, (np.log(np.maximum(v, 1)) ** 2).astype(np.int64) + 10, v + 3)
            keys[:, j] = np.where(miss, -1, bucket)
        cats = []
        for j in range(26):
            ranks = _zipf_ranks(rng, n, self.cards[j], float(self.zipf_s[j]))
            miss = rng.random(n) < CAT_MISSING[j]
            with np.errstate(over="ignore"):
                hashed = (ranks.astype(np.uint64) * np.uint64(2654435761) + self.salts[j]) \
                    & np.uint64(0xFFFFFFFF)
            cats.append((hashed.astype(np.uint32), miss))
            keys[:, 13 + j] = np.where(miss, -1, ranks)
        return [ints, cats], self.model.logits(keys)


def _calibrate(gen: _Generator, target: float, pilot_rows: int) -> None:
    """Set the hidden model's bias so the mean click probability on ``pilot_rows`` pilot
    rows (drawn from their own stream) is ``target``."""
    pilot = _Generator(gen.model.seed + 7_777_777, 1.0)
    pilot.cards, pilot.zipf_s, pilot.salts, pilot.model = gen.cards, gen.zipf_s, gen.salts, gen.model
    _, logits = pilot.chunk(pilot_rows)
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(logits + mid)))) < target:
            lo = mid
        else:
            hi = mid
    gen.model.bias = (lo + hi) / 2


def auc_score(y: np.ndarray, p: np.ndarray) -> float:
    """Exact ROC AUC with tied scores counted half (rank statistic)."""
    y = np.asarray(y, dtype=bool)
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    return float((avg_rank[inverse][y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _table(pa: Any, labels: np.ndarray, ints: list, cats: list) -> Any:
    cols = {"label": pa.array(labels.astype(np.int8))}
    for j, (v, miss) in enumerate(ints):
        cols[f"I{j + 1}"] = pa.array(v, mask=miss)
    for j, (h, miss) in enumerate(cats):
        cols[f"C{j + 1}"] = pa.array(_hex8(h), mask=miss).cast(pa.string())
    return pa.table(cols)


def synth_criteo(out_path: str | os.PathLike[str], rows: int, *, seed: int = 0,
                 scale: float = 1.0, positive_rate: float = 0.25, chunk_rows: int = 500_000,
                 quiet: bool = False) -> dict[str, Any]:
    """Write ``rows`` synthetic Criteo-format lines to ``out_path`` (atomically) and the
    generator's info to ``<out_path>.json``; return that info, which includes
    ``hidden_auc`` (the hidden model's AUC on the drawn labels) and ``positive_rate``.
    ``scale`` multiplies Criteo's per-field cardinalities."""
    if rows <= 0:
        raise DataError(f"rows must be positive, got {rows}")
    if not (scale > 0 and math.isfinite(scale)):
        raise DataError(f"scale must be a finite number > 0, got {scale}")
    out = Path(out_path)
    if out.is_dir():
        raise DataError(f"{out}: is a directory; expected the path of a file to write")
    pa, _, pcsv = arrow()
    out.parent.mkdir(parents=True, exist_ok=True)
    gen = _Generator(seed, scale)
    _calibrate(gen, positive_rate, pilot_rows=min(100_000, max(20_000, rows)))
    probs = np.empty(rows, dtype=np.float32)
    labels_all = np.empty(rows, dtype=bool)
    tmp = out.with_name(f".{out.name}.tmp")
    opts = pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    writer = None
    try:
        with open(tmp, "wb") as sink, progress_bar(total=rows, unit=" rows",
                                                  unit_scale=True, disable=quiet,
                                                  desc="synth") as bar:
            for lo in range(0, rows, chunk_rows):
                n = min(chunk_rows, rows - lo)
                (ints, cats), logits = gen.chunk(n)
                p = 1 / (1 + np.exp(-logits))
                y = gen.rng.random(n) < p
                probs[lo:lo + n], labels_all[lo:lo + n] = p, y
                table = _table(pa, y, ints, cats)
                if writer is None:
                    writer = pcsv.CSVWriter(sink, table.schema, write_options=opts)
                writer.write_table(table)
                bar.update(n)
            writer.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    info = {"format": "criteo", "generator": "shaver.synth_criteo/1", "rows": rows, "seed": seed,
            "scale": scale, "cardinalities": gen.cards,
            "positive_rate": float(labels_all.mean()),
            "hidden_auc": auc_score(labels_all, probs)}
    write_text_atomic(f"{out}.json", json.dumps(info, indent=2) + "\n")
    log.info("wrote %d rows to %s (positive rate %.3f, hidden AUC %.4f)", rows, out,
             info["positive_rate"], info["hidden_auc"])
    return info
