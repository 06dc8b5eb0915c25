"""``shaver data prepare | info | synth``: thin wrappers over :mod:`shaver.data`."""

from __future__ import annotations

import argparse
from pathlib import Path

from shaver.errors import DataError


def _key_value(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes >= 1, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``shaver data ...`` to the ``shaver`` parser."""
    data = sub.add_parser("data", help="prepare raw logs, inspect prepared data, synthesise data",
                          description="Raw logs -> prepared, memory-mapped datasets.")
    cmds = data.add_subparsers(dest="data_command", metavar="ACTION")
    cmds.required = True

    p = cmds.add_parser("prepare", help="prepare raw files into a dataset directory",
                        description="Streaming two-pass preparation (count, then encode). "
                        "The output directory appears only when complete.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="built-in spec: criteo, avazu, kdd12, movielens-100k, "
                     "movielens-100k-genre-token")
    src.add_argument("--spec", type=Path, help="a dataset spec (YAML)")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE",
                   help="raw file(s); for split method 'files': train.txt val.txt test.txt, "
                   "or train=FILE val=FILE test=FILE")
    p.add_argument("--out", type=Path, required=True, help="output directory (must not exist)")
    p.add_argument("--join", type=_key_value, action="append", default=[], metavar="NAME=PATH",
                   help="file of a join table (e.g. profile=userid_profile.txt for kdd12)")
    p.add_argument("--seed", type=int, default=None, help="split seed (default: the spec's)")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip and count malformed lines instead of stopping at the first")
    p.add_argument("--workers", type=_workers, default=None,
                   help="processes reading parts of a large TSV/libfm file (default: one per "
                   "CPU, parts of at least 64 MiB; the output is the same for any number)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_prepare)

    i = cmds.add_parser("info", help="summarise a prepared dataset",
                        description="Print fields, vocabulary sizes, rows and positive rates.")
    i.add_argument("path", type=Path, help="prepared dataset directory")
    i.add_argument("--verify", action="store_true", help="also recompute every checksum")
    i.set_defaults(func=_info)

    s = cmds.add_parser("synth", help="write a synthetic raw file (Criteo format)",
                        description="Synthetic Criteo-format text with Zipf-like values and "
                        "labels from a hidden model with field interactions; for scale "
                        "benchmarks, never for quality claims.")
    s.add_argument("--like", choices=["criteo"], default="criteo", help="raw format to imitate")
    s.add_argument("--rows", type=int, required=True, help="number of rows")
    s.add_argument("--out", type=Path, required=True, help="output file")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--scale", type=float, default=1.0,
                   help="multiplies Criteo's per-field cardinalities (default 1)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_synth)


def _inputs(values: list[str]):
    pairs = [v.partition("=") for v in values]
    if all(sep for _, sep, _ in pairs):
        return {k: p for k, _, p in pairs}
    if any(sep and k in ("train", "val", "test") for k, sep, _ in pairs):
        raise DataError("--input: give either plain paths or train=/val=/test= for all of them")
    return values if len(values) > 1 else values[0]


def _prepare(args: argparse.Namespace) -> int:
    from shaver.data.info import describe
    from shaver.data.prepare import prepare_dataset

    ds = prepare_dataset(args.spec if args.spec is not None else args.preset,
                         _inputs(args.input), args.out, seed=args.seed,
                         joins=dict(args.join), skip_bad_lines=args.skip_bad_lines,
                         quiet=args.quiet, workers=args.workers)
    print(describe(ds))
    skipped = ds.meta.get("skipped_lines", 0)
    if skipped:
        print(f"skipped {skipped} bad lines; first ones:")
        for line in ds.meta.get("skipped_examples", [])[:5]:
            print(f"  {line}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from shaver.data.info import describe
    from shaver.data.store import open_dataset

    ds = open_dataset(args.path)
    if args.verify:
        ds.verify()
    print(describe(ds))
    if args.verify:
        print("checksums: ok")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from shaver.data.synthetic import synth_criteo

    info = synth_criteo(args.out, args.rows, seed=args.seed, scale=args.scale, quiet=args.quiet)
    print(f"wrote {info['rows']} rows to {args.out}: positive rate "
          f"{info['positive_rate']:.3f}, hidden model AUC {info['hidden_auc']:.4f}")
    return 0
