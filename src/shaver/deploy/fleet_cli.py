"""``shaver fleet``: one artifact per device class from one run and its attribution."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shaver.cli import add_run_dir


def register_fleet(sub: Any) -> None:
    """Add ``shaver fleet`` to the ``shaver`` parser."""
    p = sub.add_parser(
        "fleet", help="write one artifact per device class (byte budget, precisions)",
        description="From a trained run and its attribution, write one artifact per device "
        "class of the fleet YAML (classes: name, bytes, values, head, format) and "
        "DIR/manifest.json (file, bytes, sha256, method and cut, validation and test AUC / "
        "LogLoss). A class whose budget is below its smallest artifact is reported as unmet; "
        "the others are still written. Rerunning completes only the missing or changed "
        "classes.")
    add_run_dir(p)
    p.add_argument("--attribution", type=Path, default=None,
                   help="attribution file (default RUN/attribution-codebook.safetensors)")
    p.add_argument("--fleet", type=Path, required=True, metavar="YAML", help="fleet file")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.add_argument("--dataset", type=Path, default=None,
                   help="prepared dataset (default: the run's own, checked by fingerprint)")
    p.add_argument("--no-eval", action="store_true",
                   help="skip the validation / test metrics (and the dataset)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    p.set_defaults(func=cmd_fleet)


def cmd_fleet(args: argparse.Namespace) -> int:
    from shaver.deploy.fleet import fleet

    attribution = args.attribution or args.run / "attribution-codebook.safetensors"
    result = fleet(args.run, attribution, args.fleet, args.out, dataset=args.dataset,
                   evaluate=not args.no_eval, quiet=args.quiet)
    unmet = [c["name"] for c in result.classes if c["status"] == "unmet"]
    written = len(result.classes) - len(unmet)
    print(f"wrote {result.manifest}: {written} classes written, {len(unmet)} unmet"
          + (f" ({', '.join(unmet)})" if unmet else "")
          + f"; {len(result.skipped)} of them reused from an earlier run; "
          f"{result.seconds:.2f}s")
    return 0
