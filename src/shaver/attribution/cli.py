"""``shaver attribute``: a thin wrapper over :func:`shaver.attribution.api.attribute`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``shaver attribute`` to the ``shaver`` parser."""
    p = sub.add_parser(
        "attribute", help="Shapley value of every embedding entry of a trained run",
        description="Score every scalar of the run's embedding table with Shapley values "
        "(one random permutation per sample over its active entries; SAGE stopping rule). "
        "Writes RUN/attribution-<placeholder>.safetensors (phi, standard errors, count, "
        "codebook, settings, fingerprints) unless --out is given. The running state is saved "
        "to RUN/attribution-<placeholder>.state.safetensors; --resume continues from it. "
        "Launch with torchrun to split the work over processes or GPUs.")
    p.add_argument("--run", type=Path, required=True, help="run directory (shaver train --out)")
    p.add_argument("--placeholder", choices=("codebook", "zero"), default="codebook",
                   help="value of a removed entry: the field's frequency-weighted mean "
                   "(Shaver) or 0 (default codebook)")
    p.add_argument("--data", default="train+val",
                   help="attribution data: splits joined by '+', optionally ':FRACTION' or "
                   "':COUNT', e.g. train+val, train:0.1, val:50000 (default train+val)")
    p.add_argument("--dataset", type=Path, default=None,
                   help="prepared dataset directory (default: the run's own, checked by "
                   "fingerprint)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="stop when max(stderr)/(max(phi)-min(phi)) < this, after one full pass "
                   "(default 0.01)")
    p.add_argument("--max-samples", type=int, default=None, help="stop after N samples")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after S seconds")
    p.add_argument("--batch-size", type=int, default=1024, help="samples per batch (default 1024)")
    p.add_argument("--antithetic", action="store_true",
                   help="pair each permutation with its reverse (less variance, 2x work)")
    p.add_argument("--control-variate", action="store_true",
                   help="subtract a path-gradient surrogate whose exact mean over the data is "
                   "added back: unbiased, several times less variance (one cheap extra pass)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="bf16 runs the dense layers in bfloat16 (fast on GPUs / AMX CPUs); "
                   "int8 runs the MLP layers as int8 GEMMs (CPUs without bf16; approximate, "
                   "see bench/attribution)")
    p.add_argument("--engine", choices=("fast", "reference"), default="fast",
                   help="fast (default) or the authors' step-by-step reference loop")
    p.add_argument("--bins", type=int, default=None,
                   help="also keep the credits per bin of the coalition's kept fraction, for "
                   "budget-aware scores (shaver prune; default min(8, m*d), 0 = none, at "
                   "most m*d)")
    p.add_argument("--seed", type=int, default=0, help="seed of data order and permutations")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--resume", action="store_true",
                   help="continue from the saved running state (same settings required)")
    p.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                   help="save the running state this often (default 60)")
    p.add_argument("--out", type=Path, default=None, help="output file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_attribute)


def _attribute(args: argparse.Namespace) -> int:
    from shaver.attribution.api import attribute
    from shaver.attribution.distributed import init_from_env
    from shaver.train.checkpoint import load_run, open_run_dataset

    ctx = init_from_env(args.device)
    if args.quiet:
        logging.getLogger("shaver.attribution").setLevel(logging.WARNING)
    run = load_run(args.run, device="cpu")
    dataset = open_run_dataset(run, args.dataset)
    out = args.out or run.path / f"attribution-{args.placeholder}.safetensors"
    state = Path(out).with_name(Path(out).name.replace(".safetensors", "") + ".state.safetensors")
    result = attribute(
        run.model, dataset, placeholder=args.placeholder, data=args.data,
        tolerance=args.tolerance, max_samples=args.max_samples, max_seconds=args.max_seconds,
        batch_size=args.batch_size, antithetic=args.antithetic,
        control_variate=args.control_variate, dtype=args.dtype,
        engine=args.engine, seed=args.seed, device=args.device, checkpoint_path=state,
        resume=args.resume, quiet=args.quiet, checkpoint_every_s=args.checkpoint_every,
        bins=args.bins)
    if ctx.is_main:
        result.save(out)
        s = result.settings
        print(f"attributed {result.count} samples ({s['passes']:.2f} passes, {s['stop_reason']}, "
              f"ratio {s['convergence_ratio']:.4g}, {s['seconds']:.1f}s, path {s['path']})")
        print(f"wrote {out}")
    return 0
