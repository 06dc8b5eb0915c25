"""``shaver attribute --update``: continue an attribution on new rows (see
:mod:`shaver.attribution.update`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shaver.attribution.distributed import DistContext
from shaver.errors import AttributionError

#: Options of a fresh attribution that an update takes from the attribution it continues:
#: giving one with ``--update`` is refused (``args.update_defaults`` holds their defaults).
FIXED_BY_UPDATE = ("antithetic", "control_variate", "dtype", "tolerance", "resume",
                   "max_seconds", "compute_epochs", "surrogate_rows", "surrogate_points")


def state_path_of(path: Path) -> Path:
    """The running state saved beside an attribution file."""
    return path.with_name(path.name.replace(".safetensors", "") + ".state.safetensors")


def run_update(args: argparse.Namespace, run: Any, dataset: Any) -> int:
    from shaver.attribution.update import save_update, settle_update, update_attribution
    from shaver.train.device import pick_device

    if not args.update:
        raise AttributionError("--attribution and --half-life go with --update")
    changed = [k for k in FIXED_BY_UPDATE if getattr(args, k) != args.update_defaults[k]]
    if changed:
        raise AttributionError(
            f"--update continues the attribution with its own settings; drop "
            f"{', '.join('--' + k.replace('_', '-') for k in changed)}")
    source = args.attribution or run.path / f"attribution-{args.placeholder}.safetensors"
    state = state_path_of(Path(source))
    settle_update(source, state)  # a save a kill interrupted: completed or rolled back
    if not Path(source).is_file() or not state.is_file():
        raise AttributionError(f"{source}: --update needs the attribution and its running "
                               f"state {state.name} (written by shaver attribute)")
    result, merged, settings = update_attribution(
        run.model, source, state, dataset, data=args.data, half_life=args.half_life,
        samples=args.max_samples, seed=None if args.seed == 0 else args.seed,
        batch_size=args.batch_size, device=pick_device(args.device),
        quiet=args.quiet)
    out = Path(args.out or source)
    if not DistContext.current().is_main:  # under torchrun every rank holds the merged state
        return 0
    save_update(result, merged, settings, out, state_path_of(out))
    last = result.settings["updates"][-1]
    print(f"updated with {last['rows']} new rows ({last['samples']} walks, decay "
          f"{last['decay']:.4g}, {last['seconds']:.1f}s): {result.count} samples in all")
    print(f"wrote {out}")
    return 0


def run_refresh(args: argparse.Namespace, run: Any, dataset: Any) -> int:
    """``--refresh-from OLD_RUN``: see :mod:`shaver.attribution.refresh` (one process: under
    torchrun it is refused)."""
    from shaver.attribution.refresh import refresh_attribution
    from shaver.attribution.result import Attribution
    from shaver.train.checkpoint import load_run
    from shaver.train.device import pick_device

    if args.update or args.half_life is not None:
        raise AttributionError("--refresh-from and --update / --half-life do not go together")
    if DistContext.current().world > 1:
        raise AttributionError("--refresh-from runs in one process (not under torchrun)")
    old_run = load_run(args.refresh_from, device="cpu")
    source = args.attribution or old_run.path / f"attribution-{args.placeholder}.safetensors"
    old = Attribution.load(source)
    samples = args.max_samples or int(old.settings.get("data_rows") or old.count)
    result = refresh_attribution(run.model, old_run.model, old, dataset, samples=samples,
                                 seed=None if args.seed == 0 else args.seed,
                                 batch_size=args.batch_size,
                                 device=pick_device(args.device), quiet=args.quiet)
    out = Path(args.out or run.path / f"attribution-{args.placeholder}.safetensors")
    result.save(out)
    print(f"refreshed {source} for this model with {samples} paired walks "
          f"({result.settings['refresh_seconds']:.1f}s)")
    print(f"wrote {out}")
    return 0
