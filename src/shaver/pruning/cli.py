"""``shaver prune``: a thin wrapper over :func:`shaver.pruning.runner.prune_run`."""

from __future__ import annotations

import argparse
from pathlib import Path

from shaver.cli import add_run_dir
from shaver.errors import BudgetError
from shaver.pruning.codebook import CODEBOOK_MODES
from shaver.pruning.finetune import FinetuneConfig
from shaver.pruning.runner import RUN_METHODS, format_table, prune_run
from shaver.pruning.scorers import PLACEHOLDERS, SCORERS
from shaver.runtime.headq import HEAD_DTYPES
from shaver.runtime.lowbit import TIER_DTYPES
from shaver.table.budget import KINDS, parse_budget_list
from shaver.table.families import GRANULARITIES, parse_tiers
from shaver.table.order import ORDERS


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``shaver prune`` to the ``shaver`` parser."""
    p = sub.add_parser(
        "prune", help="prune a trained run's embedding table to one or many budgets",
        description="Cut the table at every budget through one chooser, write one pruned "
        "directory per budget plus results.csv/results.json (rebuilt from every pruned "
        "directory under --out), and print the table. Budgets: --sparsity (fraction "
        "replaced), --params (kept entries), --bytes (the whole artifact file), "
        "--table-bytes (the embedding table: kept values, index, scales, codebook; or 1/N of "
        "the fp32 table); each takes a comma-separated list and they can be combined. The "
        "default (--method auto) chooses each budget's cut on the validation split among "
        "rankings x plan families (pruning, fp16/int8/int4/int2 tiers) x head precisions, "
        "each recalibrated, and reports it on test.")
    add_run_dir(p)
    p.add_argument("--attribution", type=Path, default=None,
                   help="attribution file (default: RUN/attribution-codebook.safetensors)")
    for kind, meta, text in (
            ("sparsity", "S[,S...]", "fractions of entries replaced, e.g. 0.5,0.8,0.95,0.99"),
            ("params", "N[,N...]", "numbers of kept embedding entries (integers)"),
            ("bytes", "SIZE[,SIZE...]", "sizes of the whole artifact file, e.g. 2MiB,500KB"),
            ("table-bytes", "SIZE[,SIZE...]", "sizes of the embedding table alone, e.g. "
             "40KiB, or fractions of the fp32 table: 1/16,1/64")):
        p.add_argument(f"--{kind}", default=None, metavar=meta, help=text)
    p.add_argument("--values", default=None, metavar="DTYPE[,DTYPE...]",
                   help=f"value dtypes the plan may use (default: the chooser picks among "
                   f"{', '.join(TIER_DTYPES)}; kept-entry budgets keep fp32)")
    p.add_argument("--head", default=None, metavar="DTYPE[,DTYPE...]",
                   help=f"head precisions allowed ({', '.join(HEAD_DTYPES)}; default: all "
                   "for --bytes, fp32 otherwise)")
    p.add_argument("--tiers", default=None, metavar="DTYPE[:SHARE],...",
                   help="restrict the plan to one tier family, most important entries first, "
                   "e.g. int8:0.1,int4:0.3,int2:0.6 (dtypes fp32 fp16 int8 int4 int2, "
                   "optionally /row or /field scales)")
    p.add_argument("--granularity", choices=GRANULARITIES, default=None,
                   help="with --tiers: rank single entries (default) or whole rows")
    p.add_argument("--method", choices=RUN_METHODS, default=None,
                   help="auto (default): the chooser's cut on validation (candidates: the "
                   "paper's Shaver, its zero and refit placeholders, budget-aware Shapley, "
                   "magnitude, Taylor, at every plan family and head precision allowed; rule: "
                   "AUC and recalibrated LogLoss within their standard errors, ties to the "
                   "paper's cut, else the smallest); shaver: the paper's method (Shapley, "
                   "|phi|, fixed codebook, fp32) alone; single: --scorer's ranking (the "
                   "default as soon as --scorer or --placeholder is given)")
    p.add_argument("--scorer", choices=SCORERS, default=None,
                   help="importance scores of --method single (default shapley)")
    p.add_argument("--placeholder", choices=PLACEHOLDERS, default=None,
                   help="value of pruned entries for --method single magnitude/random/taylor "
                   "(default zero; shapley uses its attribution's)")
    p.add_argument("--order", choices=ORDERS, default=None,
                   help="--method shaver/single: abs (default): prune smallest |score| first "
                   "(the authors); signed: lowest first")
    p.add_argument("--codebook", choices=CODEBOOK_MODES, default=None,
                   help="--method shaver/single: fixed (default) or refit: refit each field's "
                   "placeholder on the entries pruned")
    p.add_argument("--finetune", action="store_true",
                   help="fine-tune each chosen plan, quantisation-aware (tier map and mask "
                   "fixed; kept values and head trained through their stored grid; the plan "
                   "kept when no epoch beats it on validation)")
    p.add_argument("--finetune-epochs", type=int, default=3,
                   help="fine-tuning epochs, at most (early stopping on validation AUC)")
    p.add_argument("--finetune-lr", type=float, default=1e-3, help="fine-tuning learning rate")
    p.add_argument("--out", type=Path, default=None, help="output directory (default RUN/pruned)")
    p.add_argument("--data", type=Path, default=None,
                   help="dataset directory (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random scorer and fine-tuning")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or table")
    p.set_defaults(func=_prune)


def _prune(args: argparse.Namespace) -> int:
    budgets = []
    for kind in KINDS:
        text = getattr(args, kind)
        if text is not None:
            budgets += parse_budget_list(text, kind)
    if not budgets:
        raise BudgetError("give at least one budget: --sparsity, --params, --bytes or "
                          "--table-bytes")
    method = _method(args)
    families = None
    if args.tiers is not None:
        families = [parse_tiers(args.tiers, args.granularity or "entry")]
    elif args.granularity is not None:
        raise BudgetError("--granularity applies to the family given by --tiers; add --tiers")
    config = None
    if args.finetune:
        config = FinetuneConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, seed=args.seed)
    rows = prune_run(args.run, budgets, attribution=args.attribution,
                     scorer=args.scorer or "shapley", placeholder=args.placeholder,
                     order=args.order or "abs", codebook=args.codebook or "fixed",
                     method=method, values=_dtypes(args.values, "--values", TIER_DTYPES),
                     heads=_dtypes(args.head, "--head", HEAD_DTYPES), families=families,
                     finetune_config=config, out=args.out, data_dir=args.data, seed=args.seed,
                     device=args.device, quiet=args.quiet)
    if not args.quiet:
        print(format_table(rows))
        print(f"wrote {len(rows)} pruned directories; results.csv/json under "
              f"{Path(rows[0]['path']).parent} list every cut there")
    return 0


def _dtypes(text: str | None, flag: str, allowed: tuple[str, ...]) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise BudgetError(f"{flag} {text!r}: expected some of {', '.join(allowed)}")
    return items


def _method(args: argparse.Namespace) -> str:
    """--method, defaulting to auto unless a single ranking's options were given; options
    that the method would ignore are refused."""
    single = [f"--{k}" for k in ("scorer", "placeholder") if getattr(args, k) is not None]
    ranking = [f"--{k}" for k in ("order", "codebook") if getattr(args, k) is not None]
    method = args.method or ("single" if single else ("shaver" if ranking else "auto"))
    if method == "auto" and single + ranking:
        raise BudgetError(f"--method auto chooses the scorer, placeholder, order and codebook "
                          f"of each cut itself; drop {', '.join(single + ranking)} or use "
                          f"--method shaver / single")
    if method == "shaver" and single:
        raise BudgetError(f"--method shaver is the Shapley ranking with its own placeholder; "
                          f"{', '.join(single)} needs --method single")
    return method
