"""The ``shaver`` command line. It holds no logic: each pipeline stage registers its
subcommands from its own ``cli`` module and calls the stage's Python API."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from shaver import __version__
from shaver.errors import ShaverError

#: Stage modules, in pipeline order; each defines ``register(subparsers)``.
STAGE_CLIS = (
    "shaver.data.cli",  # data prepare | info | synth
    "shaver.train.cli",  # train, evaluate
    "shaver.attribution.cli",  # attribute
    "shaver.pruning.cli",  # prune
    "shaver.deploy.cli",  # export, inspect, predict
    "shaver.report.cli",  # bench, report, demo
)


def add_run_dir(parser: argparse.ArgumentParser, *, required: bool = True,
                help: str = "run directory (shaver train --out)") -> None:
    """``--run-dir DIR`` (``args.run``), the run directory a command reads.

    ``--run`` is its older spelling, kept for plain ``shaver`` commands: torchrun matches
    abbreviations of its own options anywhere on its command line and refuses ``--run`` as
    ambiguous (``--run-path``), so under torchrun only ``--run-dir`` works. No other flag of
    shaver is a prefix of a torchrun option (tests/test_torchrun.py checks every one).
    """
    parser.add_argument("--run-dir", "--run", dest="run", type=Path, required=required,
                        default=None, metavar="DIR", help=f"{help}; --run is the older "
                        "spelling, which torchrun refuses")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose refusals are one line on stderr (exit status 2), as every
    other bad input: ``error: shaver CMD: <what argparse found> (see shaver CMD --help)``.
    Its subcommand parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} "
                     f"(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every stage's subcommands."""
    parser = OneLineParser(
        prog="shaver",
        description="Shrink the embedding tables of CTR recommenders to any memory budget "
        "with Shapley values (Shaver).",
    )
    parser.add_argument("--version", action="version", version=f"shaver {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in STAGE_CLIS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shaver`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except ShaverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
