"""``shaver attribute --update``: continue an attribution on new rows (see
:mod:`shaver.attribution.update`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shaver.attribution.distributed import DistContext
from shaver.errors import AttributionError
from shaver.fileio import check_output_file

#: Options of ``shaver attribute`` (besides where to read and write) that an update and a
#: refresh take; any other one given with them is refused: they continue an attribution with
#: its own settings (data and walks of a refresh are the old attribution's).
TAKES = {"update": ("data", "max_samples", "seed", "batch_size", "engine"),
         "refresh": ("max_samples", "seed", "batch_size", "engine")}


def flags(keys: Any) -> str:
    """``--name-a, --name-b`` of option keys, in the order given."""
    return ", ".join("--" + k.replace("_", "-") for k in keys)


def check_given(mode: str, given: set[str], args: argparse.Namespace) -> None:
    """Refuse options given (``given``: keys of options the user wrote) that ``mode``
    ("fresh", "update" or "refresh") would ignore."""
    if mode == "refresh" and (args.update or args.half_life is not None):
        raise AttributionError("--refresh-from and --update / --half-life do not go together")
    if mode == "update" and not args.update:
        raise AttributionError("--attribution and --half-life go with --update")
    if mode == "fresh":
        return
    ignored = sorted(given - set(TAKES[mode]))
    if ignored and mode == "update":
        raise AttributionError(
            f"--update continues the attribution with its own settings; drop {flags(ignored)}")
    if ignored:
        raise AttributionError(
            f"--refresh-from reuses the old attribution's data and settings; drop "
            f"{flags(ignored)}")


def state_path_of(path: Path) -> Path:
    """The running state saved beside an attribution file."""
    return path.with_name(path.name.replace(".safetensors", "") + ".state.safetensors")


def run_update(args: argparse.Namespace, run: Any, dataset: Any, given: set[str]) -> int:
    """``--update`` (options checked by :func:`check_given`)."""
    from shaver.attribution.update import save_update, settle_update, update_attribution
    from shaver.train.device import pick_device

    source = args.attribution or run.path / f"attribution-{args.placeholder}.safetensors"
    state = state_path_of(Path(source))
    settle_update(source, state)  # a save a kill interrupted: completed or rolled back
    if not Path(source).is_file() or not state.is_file():
        raise AttributionError(f"{source}: --update needs the attribution and its running "
                               f"state {state.name} (written by shaver attribute)")
    out = check_output_file(args.out or source, AttributionError)
    check_output_file(state_path_of(out), AttributionError)
    result, merged, settings = update_attribution(
        run.model, source, state, dataset, data=args.data, half_life=args.half_life,
        samples=args.max_samples, seed=args.seed if "seed" in given else None,
        batch_size=args.batch_size, engine=args.engine, device=pick_device(args.device),
        quiet=args.quiet)
    if not DistContext.current().is_main:  # under torchrun every rank holds the merged state
        return 0
    save_update(result, merged, settings, out, state_path_of(out))
    last = result.settings["updates"][-1]
    print(f"updated with {last['rows']} new rows ({last['samples']} walks, decay "
          f"{last['decay']:.4g}, {last['seconds']:.1f}s): {result.count} samples in all")
    print(f"wrote {out}")
    return 0


def run_refresh(args: argparse.Namespace, run: Any, dataset: Any, given: set[str]) -> int:
    """``--refresh-from OLD_RUN``: see :mod:`shaver.attribution.refresh` (one process: under
    torchrun it is refused)."""
    from shaver.attribution.refresh import refresh_attribution
    from shaver.attribution.result import Attribution
    from shaver.train.checkpoint import load_run
    from shaver.train.device import pick_device

    if DistContext.current().world > 1:
        raise AttributionError("--refresh-from runs in one process (not under torchrun)")
    old_run = load_run(args.refresh_from, device="cpu")
    source = args.attribution or old_run.path / f"attribution-{args.placeholder}.safetensors"
    out = check_output_file(args.out or run.path / f"attribution-{args.placeholder}.safetensors",
                            AttributionError)
    old = Attribution.load(source)
    samples = args.max_samples or int(old.settings.get("data_rows") or old.count)
    result = refresh_attribution(run.model, old_run.model, old, dataset, samples=samples,
                                 seed=args.seed if "seed" in given else None,
                                 batch_size=args.batch_size, engine=args.engine,
                                 device=pick_device(args.device), quiet=args.quiet)
    result.save(out)
    print(f"refreshed {source} for this model with {samples} paired walks "
          f"({result.settings['refresh_seconds']:.1f}s)")
    print(f"wrote {out}")
    return 0
