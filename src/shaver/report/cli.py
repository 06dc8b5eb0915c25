"""``shaver bench``, ``shaver report`` and ``shaver demo``: argument parsing only; the work is
done by :mod:`shaver.report.harness`, :mod:`shaver.report.html` and :mod:`shaver.report.demo`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shaver.cli import add_run_dir
from shaver.report.schema import ReportError, load_document

DEFAULT_METHODS = "auto,shaver,shaver-zero,magnitude,random,taylor,ptq,shaver-bytes"
DEFAULT_SPARSITY = "0.5,0.8,0.9,0.95,0.99,0.999,1.0"


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench``, ``report`` and ``demo`` subcommands."""
    _register_bench(sub)
    _register_report(sub)
    _register_demo(sub)


def _register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmark grid: models x methods x budgets x seeds (resumable)",
        description="Train (or reuse) base models, attribute, prune with each method at each "
        "budget, evaluate, and write results.csv / results.json / report.html under --out. "
        "Finished cells are skipped when the command is run again.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="a prepared dataset directory (shaver data prepare)")
    src.add_argument("--dataset", help="a built-in dataset: movielens-100k (genres a list "
                     "field), movielens-100k-genre-token (the genre list as one token) or "
                     "synthetic-criteo")
    src.add_argument("--fleet", type=Path, metavar="YAML",
                     help="instead of the grid, time a device fleet (shaver fleet) from one "
                     "attribution: of --run, or of a random Criteo-shaped DeepFM of --rows rows")
    add_run_dir(p, required=False, help="with --fleet: a trained run directory")
    p.add_argument("--attribution", type=Path, default=None,
                   help="with --fleet --run: its attribution (default RUN/attribution-codebook"
                   ".safetensors)")
    p.add_argument("--repeats", type=int, default=3, help="with --fleet: timed runs (default 3)")
    p.add_argument("--rows", type=int, default=200_000,
                   help="rows of synthetic-criteo (default 200000)")
    p.add_argument("--models", type=_csv, default=["deepfm"], help="comma list (default deepfm)")
    p.add_argument("--methods", type=_csv, default=_csv(DEFAULT_METHODS),
                   help=f"comma list (default {DEFAULT_METHODS}; auto: at each budget the "
                   "best candidate cut on validation, reported on test; shaver: the paper's "
                   "method; also shaver-signed, shaver-refit, magnitude-codebook, "
                   "random-codebook, taylor-codebook). ptq runs int8, int4, int2 (no "
                   "pruning); shaver-bytes runs table-byte budgets 1/4, 1/8, 1/16, 1/32, "
                   "1/64, 1/128 of the fp32 table, each choosing sparsity x bits x tiers on "
                   "validation")
    p.add_argument("--sparsity", type=_floats, default=_floats(DEFAULT_SPARSITY),
                   help=f"comma list of sparsities in (0, 1] (default {DEFAULT_SPARSITY}; 1.0 "
                   "prunes every entry: the floor)")
    p.add_argument("--seeds", type=_ints, default=[0], help="comma list of seeds (default 0)")
    p.add_argument("--epochs", type=int, default=10, help="max training epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=2048, help="training batch (default 2048)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="attribution stopping tolerance (default 0.01)")
    p.add_argument("--max-samples", type=int, default=None, help="attribution sample cap")
    p.add_argument("--max-seconds", type=float, default=None, help="attribution time cap")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default auto)")
    p.add_argument("--out", required=True, type=Path, help="output folder, e.g. reports/NAME")
    p.add_argument("--no-html", action="store_true",
                   help="skip report.html (render it later with `shaver report OUT`)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_bench)


def _register_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="render a benchmark folder or report.json as one HTML file",
        description="Render the self-contained HTML report (plots embedded) from a `shaver "
        "bench` output folder or a report.json document.")
    p.add_argument("source", type=Path, help="a bench output folder, a report.json file, or a "
                   "shaver fleet output folder (its manifest.json)")
    p.add_argument("--out", type=Path, default=None,
                   help="HTML file to write (default: report.html beside the source)")
    p.add_argument("--format", choices=("png", "svg"), default="png",
                   help="image format embedded in the page (default png)")
    p.set_defaults(func=_run_report)


def _register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the whole pipeline on a small dataset in a few minutes",
        description="Prepare a dataset, train DeepFM, attribute, prune at several budgets, "
        "export an artifact and write the HTML report; prints a short table.")
    p.add_argument("--dataset", default="movielens-100k",
                   help="movielens-100k (default), movielens-100k-genre-token or "
                   "synthetic-criteo")
    p.add_argument("--rows", type=int, default=100_000,
                   help="rows of synthetic-criteo (default 100000)")
    p.add_argument("--out", type=Path, default=Path("reports/demo"),
                   help="output folder (default reports/demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random step (default 0)")
    p.add_argument("--attribution-samples", type=int, default=None,
                   help="cap on the samples attributed; it stops earlier once converged "
                   "(default: 30000 x 128 / (fields x 16), e.g. 30000 for MovieLens)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_demo)


def _run_bench(args: argparse.Namespace) -> int:
    if args.fleet is not None:
        return _run_fleet_bench(args)
    from shaver.report.harness import BenchConfig, run_bench

    config = BenchConfig(
        data=args.data, dataset=args.dataset, rows=args.rows, models=args.models,
        methods=args.methods, sparsities=args.sparsity, seeds=args.seeds,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, tolerance=args.tolerance,
        max_samples=args.max_samples, max_seconds=args.max_seconds, device=args.device,
        html=not args.no_html)
    outcome = run_bench(config, args.out, quiet=args.quiet)
    print(outcome.table())
    print(f"results: {outcome.results_csv}")
    if outcome.report_html is not None:
        print(f"report:  {outcome.report_html}")
    return 0


def _run_fleet_bench(args: argparse.Namespace) -> int:
    import json

    from shaver.report.fleet_bench import bench_fleet
    from shaver.report.fleet_table import fleet_document
    from shaver.report.html import write_report
    from shaver.report.schema import atomic_write_text

    figures = bench_fleet(args.fleet, run=args.run, attribution=args.attribution,
                          rows=args.rows, workdir=args.out / "data", repeats=args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "shaver-fleet-manifest", "format_version": 1,
                "source": {"run": figures["source"]}, "classes": figures["manifest"],
                "seconds": figures["fleet_seconds"]}
    atomic_write_text(args.out / "fleet_bench.json", json.dumps(figures, indent=1) + "\n")
    atomic_write_text(args.out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    if not args.no_html:
        doc = fleet_document(args.out / "manifest.json", title="shaver fleet bench")
        print(f"report: {write_report(doc, args.out / 'report.html')}")
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from shaver.report.html import write_report

    source: Path = args.source
    document = source / "report.json" if source.is_dir() else source
    if source.is_dir() and not document.is_file() and (source / "manifest.json").is_file():
        from shaver.report.fleet_table import fleet_document

        out = args.out or source / "report.html"
        print(f"report: {write_report(fleet_document(source / 'manifest.json'), out)}")
        return 0
    from shaver.report.compute_section import QVC_FILE, compute_document, read_record

    qvc = document.with_name(QVC_FILE)  # bench/attribution/quality_vs_compute.py's record
    if not document.is_file() and qvc.is_file():
        out = args.out or qvc.with_name("report.html")
        print(f"report: {write_report(compute_document(qvc), out, image_format=args.format)}")
        return 0
    if not document.is_file():
        raise ReportError(f"{document}: no report document (run `shaver bench` first)")
    out = args.out or document.with_name("report.html")
    doc: Any = document
    if qvc.is_file():
        doc = load_document(document)
        doc["quality_vs_compute"] = [read_record(qvc)]
    path = write_report(doc, out, image_format=args.format)
    print(f"report: {path}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from shaver.report.demo import run_demo

    outcome = run_demo(dataset=args.dataset, rows=args.rows, out=args.out, seed=args.seed,
                       quiet=args.quiet, attribution_samples=args.attribution_samples)
    print(outcome.table())
    print(f"\nreport:   {outcome.report_html}\nartifact: {outcome.artifact}")
    print(f"total {outcome.seconds:.0f} s")
    return 0
