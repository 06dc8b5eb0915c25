"""``shaver prune``: a thin wrapper over :func:`shaver.pruning.runner.prune_run`."""

from __future__ import annotations

import argparse
from pathlib import Path

from shaver.cli import add_run_dir
from shaver.errors import BudgetError
from shaver.pruning.bytes_runner import PRECISIONS
from shaver.pruning.codebook import CODEBOOK_MODES
from shaver.pruning.finetune import FinetuneConfig
from shaver.pruning.runner import RUN_METHODS
from shaver.pruning.scorers import PLACEHOLDERS, SCORERS
from shaver.table.budget import parse_budget_list
from shaver.table.families import GRANULARITIES, parse_tiers
from shaver.table.order import ORDERS


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``shaver prune`` to the ``shaver`` parser."""
    p = sub.add_parser(
        "prune", help="prune a trained run's embedding table to one or many budgets",
        description="Sort the entry scores once, cut at every budget, write one pruned "
        "directory per budget plus results.csv/results.json, and print the table. Budgets: "
        "--sparsity (fraction replaced), --params (kept entries), --bytes (size of the whole "
        "artifact file), --table-bytes (size of the embedding table: kept values, index, "
        "scales, codebook); each takes a comma-separated list and they can be combined. A "
        "byte budget chooses sparsity, bits and precision tiers on the validation split "
        "(--precision auto, the default) and reports test metrics; the other budgets take "
        "the best cut of several methods on validation (--method auto, the default).")
    add_run_dir(p)
    p.add_argument("--attribution", type=Path, default=None,
                   help="attribution file (default: RUN/attribution-codebook.safetensors)")
    p.add_argument("--sparsity", default=None, metavar="S[,S...]",
                   help="fractions of entries replaced, e.g. 0.5,0.8,0.95,0.99,0.999")
    p.add_argument("--params", default=None, metavar="N[,N...]",
                   help="numbers of kept embedding entries (integers)")
    p.add_argument("--bytes", default=None, metavar="SIZE[,SIZE...]",
                   help="sizes of the whole artifact file, e.g. 2MiB,500KB,123456B")
    p.add_argument("--table-bytes", default=None, metavar="SIZE[,SIZE...]",
                   help="sizes of the embedding table alone (kept values + index + scales + "
                   "codebook), e.g. 40KiB, or fractions of the fp32 table: 1/16,1/64")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="byte budgets: auto (default) searches sparsity x bits (fp32, fp16, "
                   "int8, int4, int2) x tiers on validation; fp32 prunes with fp32 values only "
                   "(by --method)")
    p.add_argument("--tiers", default=None, metavar="DTYPE[:SHARE],...",
                   help="restrict the byte-budget search to one tier plan, most important "
                   "entries first, e.g. int8:0.1,int4:0.3,int2:0.6 (dtypes fp32 fp16 int8 "
                   "int4 int2, optionally /row or /field scales)")
    p.add_argument("--granularity", choices=GRANULARITIES, default="entry",
                   help="with --tiers: rank single entries (default) or whole rows")
    p.add_argument("--method", choices=RUN_METHODS, default=None,
                   help="auto (default): at each budget, the best of several cuts (the "
                   "paper's Shaver, budget-aware Shapley, codebook/zero placeholders, "
                   "magnitude, Taylor, everything pruned) by validation AUC within its noise "
                   "(ties: the paper's Shaver, else the fewest kept entries), reported on test; "
                   "shaver: the paper's method (Shapley, |phi|, fixed codebook) alone; single: "
                   "--scorer's ranking (the default as soon as --scorer, --placeholder, "
                   "--order or --codebook is given)")
    p.add_argument("--scorer", choices=SCORERS, default=None,
                   help="importance scores (default shapley; not with --method auto)")
    p.add_argument("--placeholder", choices=PLACEHOLDERS, default=None,
                   help="value of pruned entries for magnitude/random/taylor (default zero; "
                   "shapley uses its attribution's)")
    p.add_argument("--order", choices=ORDERS, default=None,
                   help="abs (default): prune smallest |score| first (the authors); signed: "
                   "lowest first")
    p.add_argument("--codebook", choices=CODEBOOK_MODES, default=None,
                   help="fixed (default) or refit: refit each field's placeholder on the "
                   "entries pruned")
    p.add_argument("--finetune", action="store_true",
                   help="fine-tune kept entries and head after pruning (mask fixed)")
    p.add_argument("--finetune-epochs", type=int, default=3, help="fine-tuning epochs")
    p.add_argument("--finetune-lr", type=float, default=1e-4, help="fine-tuning learning rate")
    p.add_argument("--out", type=Path, default=None, help="output directory (default RUN/pruned)")
    p.add_argument("--data", type=Path, default=None,
                   help="dataset directory (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random scorer and fine-tuning")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or table")
    p.set_defaults(func=_prune)


def _prune(args: argparse.Namespace) -> int:
    from shaver.pruning.runner import format_table, prune_run

    budgets = []
    for kind in ("sparsity", "params", "bytes"):
        text = getattr(args, kind)
        if text is not None:
            budgets += parse_budget_list(text, kind)
    table = [t.strip() for t in (args.table_bytes or "").split(",") if t.strip()]
    if not budgets and not table:
        raise BudgetError("give at least one budget: --sparsity, --params, --bytes or "
                          "--table-bytes")
    method = _method(args)
    shapes = None if args.tiers is None else [parse_tiers(args.tiers, args.granularity)]
    config = None
    if args.finetune:
        config = FinetuneConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, seed=args.seed)
    rows = prune_run(args.run, budgets, attribution=args.attribution,
                     scorer=args.scorer or "shapley", placeholder=args.placeholder,
                     order=args.order or "abs", codebook=args.codebook or "fixed",
                     method=method, finetune_config=config, out=args.out, data_dir=args.data,
                     seed=args.seed, device=args.device, quiet=args.quiet, table_budgets=table,
                     precision=args.precision, shapes=shapes)
    if not args.quiet:
        print(format_table(rows))
        print(f"wrote {len(rows)} pruned directories and results.csv/json under "
              f"{Path(rows[0]['path']).parent}")
    return 0


def _method(args: argparse.Namespace) -> str:
    """--method, defaulting to auto unless a single ranking's options were given."""
    given = [f"--{k}" for k in ("scorer", "placeholder", "order", "codebook")
             if getattr(args, k) is not None]
    method = args.method or ("single" if given else "auto")
    if method == "auto" and given:
        raise BudgetError(f"--method auto chooses the scorer, placeholder, order and codebook "
                          f"of each cut itself; drop {', '.join(given)} or use --method single")
    if method == "shaver" and args.scorer not in (None, "shapley"):
        raise BudgetError(f"--method shaver is the Shapley ranking; --scorer {args.scorer} "
                          f"needs --method single")
    return method
