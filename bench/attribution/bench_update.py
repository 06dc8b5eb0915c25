"""Attribution update vs a fresh attribution: seconds, and agreement of phi.

MovieLens-100k DeepFM (the run of bench/deploy/head_quant_auc.py, trained if absent). The
first ``--rows`` rows of train+val are split into OLD (the first 1 - ``--new`` of them) and
NEW rows, written as two prepared datasets with the run's vocabulary (same fingerprint).
Measured in one run, each with ``--passes`` walks per row, one torch thread:

* base: a fresh attribution of the OLD rows (its state kept, as ``shaver attribute`` does);
* update: ``update_attribution`` of that state with the NEW rows (the timed operation);
* fresh (the baseline): a fresh attribution over OLD + NEW rows, given the same codebook;
* agreement: the share of entries whose update - fresh difference is within 4 combined
  standard errors, and the overlap of the kept sets at sparsity 0.95.

    nice -n 10 .venv/bin/python bench/attribution/bench_update.py            # a few minutes
    nice -n 10 .venv/bin/python bench/attribution/bench_update.py --rows 4000 --passes 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))


def split_dataset(dataset, rows: int, new: float, root: Path):
    """(old, new, both) prepared datasets from the first ``rows`` rows of train+val."""
    from shaver.data.store import write_prepared

    x, y = dataset.arrays("train+val")
    x, y = np.asarray(x[:rows]), np.asarray(y[:rows])
    cut = int(round(rows * (1 - new)))
    vocab = dataset.vocabularies
    vocab = vocab() if callable(vocab) else vocab
    names = list(dataset.meta["field_names"]) if "field_names" in dataset.meta else list(vocab)
    freq = np.asarray(dataset.frequencies)

    def write(name, lo, hi):
        return write_prepared(root / name, field_names=names, vocabularies=vocab,
                              splits={"train": (x[lo:hi], y[lo:hi], np.arange(lo, hi))},
                              frequencies=freq)
    return write("old", 0, cut), write("new", cut, rows), write("both", 0, rows)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    from head_quant_auc import trained_run

    from shaver.attribution.api import attribute
    from shaver.attribution.update import update_attribution

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("reports/bench-head-quant"))
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--new", type=float, default=0.1, help="share of new rows")
    parser.add_argument("--passes", type=int, default=2, help="walks per row")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, dataset, _ = trained_run(args.workdir, 8, 30_000, 0, True)
    ratios, rows_out = [], []
    with tempfile.TemporaryDirectory() as tmp:
        old_ds, new_ds, both_ds = split_dataset(dataset, args.rows, args.new, Path(tmp))
        opts = dict(tolerance=None, quiet=True, device="cpu", data="train")
        for rep in range(args.repeats):
            state = Path(tmp) / f"base{rep}.state.safetensors"
            base_s, base = timed(attribute, model, old_ds, seed=rep, checkpoint_path=state,
                                 max_samples=args.passes * old_ds.num_rows("train"), **opts)
            base.save(Path(tmp) / f"base{rep}.safetensors")
            upd_s, (upd, _, _) = timed(update_attribution, model,
                                       Path(tmp) / f"base{rep}.safetensors", state, new_ds,
                                       data="train")
            fresh_s, fresh = timed(attribute, model, both_ds, seed=100 + rep,
                                   max_samples=args.passes * both_ds.num_rows("train"),
                                   codebook=base.codebook, **opts)
            z = (upd.phi - fresh.phi).abs() / (upd.stderr ** 2 + fresh.stderr ** 2).sqrt()
            seen = fresh.stderr > 0
            within = float((z[seen] < 4).float().mean())
            k = int(0.05 * upd.phi.numel())
            top_u = set(torch.topk(upd.phi.abs().view(-1), k).indices.tolist())
            top_f = set(torch.topk(fresh.phi.abs().view(-1), k).indices.tolist())
            ratios.append(upd_s / fresh_s)
            rows_out.append((base_s, upd_s, fresh_s, within, len(top_u & top_f) / k))
    print(f"MovieLens-100k DeepFM, {args.rows} rows ({args.new:.0%} new), {args.passes} walks "
          f"per row, {args.repeats} repeat(s), 1 thread")
    for base_s, upd_s, fresh_s, within, overlap in rows_out:
        print(f"  base (old rows) {base_s:7.2f} s | update (new rows) {upd_s:6.2f} s | fresh "
              f"(all rows) {fresh_s:7.2f} s | update/fresh {upd_s / fresh_s:.1%} | phi within "
              f"4 SE of fresh: {within:.2%} | top-5% overlap {overlap:.1%}")
    print(f"median update/fresh: {statistics.median(ratios):.1%} (target <= 15%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
