"""``shaver attribute``: a thin wrapper over :func:`shaver.attribution.api.attribute`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from shaver.attribution.cost import attribution_cost, describe_cost, run_epoch_seconds
from shaver.attribution.sampling import DEFAULT_DATA
from shaver.attribution.stopping import (
    DEFAULT_STOP_BUDGETS,
    DEFAULT_STOP_DRAWS,
    DEFAULT_STOP_FRACTION,
)
from shaver.attribution.surrogate import (
    CONTROL_VARIATES,
    DEFAULT_POINTS,
    DEFAULT_SURROGATE_ROWS,
)
from shaver.attribution.update_cli import (
    check_given,
    flags,
    run_refresh,
    run_update,
    state_path_of,
)
from shaver.cli import add_run_dir
from shaver.errors import AttributionError
from shaver.fileio import check_output_file

#: Defaults of the options whose presence matters. The parser leaves them None (False for
#: flags), so that an explicit value equal to the default (``--seed 0``) still counts as
#: given: an update or a refresh refuses the options it does not take, and the default
#: stopping rule refuses the other rule's options.
DEFAULTS: dict[str, Any] = {
    "data": DEFAULT_DATA, "stop": "cut",
    "stop_budgets": ",".join(f"{s:g}" for s in DEFAULT_STOP_BUDGETS),
    "stop_fraction": DEFAULT_STOP_FRACTION, "stop_draws": DEFAULT_STOP_DRAWS,
    "min_passes": 1.0, "tolerance": 0.01, "max_samples": None, "max_seconds": None,
    "compute_epochs": None, "batch_size": 1024, "antithetic": False,
    "control_variate": "sampled", "surrogate_points": DEFAULT_POINTS,
    "surrogate_rows": DEFAULT_SURROGATE_ROWS, "dtype": "auto", "engine": "fast", "bins": None,
    "seed": 0, "resume": False, "checkpoint_every": 60.0,
}
#: Options of the cut rule, meaningless under ``--stop sage``.
CUT_RULE = ("stop_budgets", "stop_fraction", "stop_draws")
#: Lower bounds of numeric options: (bound, strictly above).
LOWER = {"max_seconds": (0, True), "compute_epochs": (0, True), "max_samples": (1, False),
         "batch_size": (1, False), "checkpoint_every": (0, True), "half_life": (0, True)}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``shaver attribute`` to the ``shaver`` parser."""
    p = sub.add_parser(
        "attribute", help="Shapley value of every embedding entry of a trained run",
        description="Score every scalar of the run's embedding table with Shapley values "
        "(one random permutation per sample over its active entries; stops once the cuts "
        "at the report's budgets are stable, or by the paper's SAGE rule with --stop sage). "
        "Writes RUN/attribution-<placeholder>.safetensors (phi, standard errors, count, "
        "codebook, settings, fingerprints) unless --out is given. The running state is saved "
        "to RUN/attribution-<placeholder>.state.safetensors; --resume continues from it. "
        "Launch with torchrun to split the work over processes or GPUs "
        "(torchrun --nproc-per-node N -m shaver attribute --run-dir RUN ...).")
    add_run_dir(p)
    p.add_argument("--placeholder", choices=("codebook", "zero"), default="codebook",
                   help="value of a removed entry: the field's frequency-weighted mean "
                   "(Shaver) or 0 (default codebook)")
    p.add_argument("--data", default=None,
                   help="attribution data: splits joined by '+', optionally ':FRACTION' or "
                   "':COUNT', e.g. train+val (the paper's), train:0.1, val:50000 (default "
                   f"{DEFAULT_DATA}: the default cut, auto, chooses on the validation split, "
                   "which the attribution then has not seen)")
    p.add_argument("--dataset", type=Path, default=None,
                   help="prepared dataset directory (default: the run's own, checked by "
                   "fingerprint)")
    p.add_argument("--stop", choices=("cut", "sage"), default=None,
                   help="stopping rule, checked after --min-passes: 'cut' (default) stops once "
                   "the cut at every --stop-budgets sparsity is stable (noise could cost less "
                   "than --stop-fraction of the kept |phi|, counting walk noise, the surrogate "
                   "sample's error and the rows not yet walked; no pass needed); 'sage' is "
                   "the paper's "
                   "rule, max(stderr)/(max(phi)-min(phi)) < --tolerance")
    p.add_argument("--stop-budgets", default=None,
                   metavar="S,S,...", help="sparsities whose cut must be stable (default: the "
                   f"report's grid {DEFAULTS['stop_budgets']})")
    p.add_argument("--stop-fraction", type=float, default=None,
                   help="stable when sampling noise could cost less than this share of the "
                   f"|phi| each cut keeps (default {DEFAULT_STOP_FRACTION:g})")
    p.add_argument("--stop-draws", type=int, default=None,
                   help=f"noise draws per check of the cut rule (default {DEFAULT_STOP_DRAWS})")
    p.add_argument("--min-passes", type=float, default=None,
                   help="passes over the data before a rule may stop the run (default: 0 for "
                   "--stop cut, whose errors count the rows not yet walked; 1 for --stop "
                   "sage, the paper's; a fraction walks a uniform random part of the data: "
                   "still unbiased)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="--stop sage only: stop when max(stderr)/(max(phi)-min(phi)) < this "
                   "(default 0.01)")
    p.add_argument("--max-samples", type=int, default=None, help="stop after N samples")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after S seconds")
    p.add_argument("--compute-epochs", type=float, default=None, metavar="E",
                   help="stop after E times the wall time of one training epoch of this run "
                   "(the mean epoch seconds its config.json records; with --max-seconds, "
                   "the smaller cap)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per batch (default 1024)")
    p.add_argument("--antithetic", action="store_true",
                   help="pair each permutation with its reverse (less variance, 2x work)")
    p.add_argument("--control-variate", nargs="?", const="exact", default=None,
                   choices=CONTROL_VARIATES, metavar="{exact,sampled,off}",
                   help="subtract a path-gradient surrogate whose mean over the data is added "
                   "back: unbiased, less variance. 'exact' (the flag alone) takes that mean in "
                   "one extra pass over the data first; 'sampled' estimates it on "
                   "--surrogate-rows rows per walked sample, growing with the walks (no "
                   "up-front pass; the default); 'off': the paper's plain walks")
    p.add_argument("--surrogate-points", type=int, default=None,
                   help="quadrature points of the control variate's path integral (default "
                   f"{DEFAULT_POINTS}: the midpoint)")
    p.add_argument("--surrogate-rows", type=float, default=None,
                   help="--control-variate sampled: rows of the surrogate's sample per walked "
                   f"sample (>= 1; default {DEFAULT_SURROGATE_ROWS:g})")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16", "int8"), default=None,
                   help="auto (default): the fastest precision this device has natively (int8 "
                   "on CPUs with VNNI / AMX-INT8, bf16 on GPUs and on AMX-BF16 / AVX-512 BF16 "
                   "CPUs without them, else int8 on CPUs), used only where "
                   "its credits agree with fp32's on the first batch, else fp32; bf16 runs the "
                   "dense layers in bfloat16; int8 runs the MLP layers as int8 GEMMs "
                   "(approximate, see bench/attribution)")
    p.add_argument("--engine", choices=("fast", "reference"), default=None,
                   help="fast (default) or the authors' step-by-step reference loop")
    p.add_argument("--bins", type=int, default=None,
                   help="also keep the credits per bin of the coalition's kept fraction, for "
                   "budget-aware scores (shaver prune; default min(8, m*d), 0 = none, at "
                   "most m*d)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of data order and permutations (default 0; --update and "
                   "--refresh-from: the old attribution's, moved on)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--resume", action="store_true",
                   help="continue from the saved running state (same settings required)")
    p.add_argument("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                   help="save the running state this often (default 60)")
    p.add_argument("--out", type=Path, default=None, help="output file")
    p.add_argument("--update", action="store_true",
                   help="continue an existing attribution (--attribution, with its state file) "
                   "on NEW rows (--data of --dataset, same model and vocabulary); the "
                   "accumulators merge; --data, --max-samples, --seed, --batch-size and "
                   "--engine apply, its other settings are the attribution's own. Writes --out "
                   "(default: replaces the attribution)")
    p.add_argument("--attribution", type=Path, default=None,
                   help="with --update: the attribution to continue (default "
                   "RUN/attribution-<placeholder>.safetensors)")
    p.add_argument("--refresh-from", type=Path, default=None, metavar="OLD_RUN",
                   help="the run is a refreshed (fine-tuned) OLD_RUN: reuse OLD_RUN's "
                   "attribution (or --attribution) as a control variate; --max-samples "
                   "paired walks (default one pass over the attribution's data; seed: the "
                   "old attribution's + 1 unless --seed is given; --batch-size and --engine "
                   "apply, the data and other settings are the old attribution's)")
    p.add_argument("--half-life", type=float, default=None, metavar="ROWS",
                   help="with --update: old evidence weighs half after this many new rows "
                   "(exponential decay; default: no decay)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_attribute)


def _attribute(args: argparse.Namespace) -> int:
    from shaver.attribution.api import attribute
    from shaver.attribution.distributed import init_from_env
    from shaver.train.checkpoint import load_run, open_run_dataset

    given = check_options(args)
    mode = "refresh" if args.refresh_from is not None else "update" if (
        args.update or args.half_life is not None or args.attribution is not None) else "fresh"
    check_given(mode, given, args)
    ctx = init_from_env(args.device)
    if args.quiet:
        logging.getLogger("shaver.attribution").setLevel(logging.WARNING)
    if mode != "fresh" and args.out is not None:
        check_output_file(args.out, AttributionError)
    run = load_run(args.run, device="cpu")
    dataset = open_run_dataset(run, args.dataset)
    if mode == "refresh":
        return run_refresh(args, run, dataset, given)
    if mode == "update":
        return run_update(args, run, dataset, given)
    out = check_output_file(args.out or run.path / f"attribution-{args.placeholder}.safetensors",
                            AttributionError)
    state = check_output_file(state_path_of(out), AttributionError)
    if args.resume and not state.is_file():
        raise AttributionError(f"{state}: no running state to resume (--resume continues an "
                               f"interrupted attribution with the same --out); drop --resume "
                               f"to start afresh")
    max_seconds = args.max_seconds
    if args.compute_epochs is not None:
        cap = args.compute_epochs * epoch_seconds(run)
        max_seconds = cap if max_seconds is None else min(max_seconds, cap)
    result = attribute(
        run.model, dataset, placeholder=args.placeholder, data=args.data,
        tolerance=args.tolerance, max_samples=args.max_samples, max_seconds=max_seconds,
        batch_size=args.batch_size, antithetic=args.antithetic,
        control_variate=args.control_variate, surrogate_rows=args.surrogate_rows,
        surrogate_points=args.surrogate_points,
        dtype=args.dtype,
        engine=args.engine, seed=args.seed, device=args.device, checkpoint_path=state,
        resume=args.resume, quiet=args.quiet, checkpoint_every_s=args.checkpoint_every,
        stop=args.stop, stop_budgets=_sparsities(args.stop_budgets),
        stop_fraction=args.stop_fraction, stop_draws=args.stop_draws, min_passes=args.min_passes,
        bins=args.bins)
    if ctx.is_main:
        s = result.settings
        s["cost"] = attribution_cost(s["seconds"], s["passes"], run_epoch_seconds(run.config))
        result.save(out)
        print(f"attributed {result.count} samples ({s['stop_reason']}, ratio "
              f"{s['convergence_ratio']:.4g}, path {s['path']}, {s['dtype_used']})")
        print(f"cost: {describe_cost(s['cost'])}")
        print(f"wrote {out}")
    return 0


def check_options(args: argparse.Namespace) -> set[str]:
    """The options given on the command line (see :data:`DEFAULTS`); fills in the defaults
    of the others and refuses values that make no sense, naming the option and the value."""
    given = {k for k in DEFAULTS if getattr(args, k) is not None and getattr(args, k) is not False}
    for key in DEFAULTS:
        if key not in given:
            setattr(args, key, DEFAULTS[key])
    for key, (low, strict) in LOWER.items():
        value = getattr(args, key)
        if value is not None and not (value > low if strict else value >= low):
            raise AttributionError(f"--{key.replace('_', '-')} must be "
                                   f"{'>' if strict else '>='} {low}, got {value}")
    if "tolerance" in given and args.stop != "sage":
        raise AttributionError("--tolerance is the threshold of --stop sage; the default "
                               "rule, --stop cut, has none (it stops once the cuts are "
                               "stable, see --stop-fraction): add --stop sage or drop "
                               "--tolerance")
    cut_options = [k for k in CUT_RULE if k in given]
    if args.stop == "sage" and cut_options:
        raise AttributionError(f"{flags(cut_options)} "
                               f"{'belongs' if len(cut_options) == 1 else 'belong'} to --stop "
                               f"cut; --stop sage stops by --tolerance")
    return given


def epoch_seconds(run: Any) -> float:
    """Mean wall seconds of one training epoch of ``run`` (from its config.json)."""
    seconds = run_epoch_seconds(run.config)
    if seconds is None:
        raise AttributionError(
            f"{run.path / 'config.json'}: no training epoch seconds recorded "
            f"(metrics.history[].seconds); give --max-seconds instead of --compute-epochs")
    return seconds


def _sparsities(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise AttributionError(f"--stop-budgets: expected sparsities such as 0.5,0.95,0.99, "
                               f"got {text!r}") from None
