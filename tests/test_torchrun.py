"""shaver under torchrun: its flags pass torchrun's real parser, and the README's distributed
lines run as written.

torchrun (``torch.distributed.run``) parses its whole command line with argparse, which
matches abbreviations of its options anywhere, also after ``-m shaver``: a shaver flag that
is a prefix of two torchrun options is refused before anything runs (``--run`` -> ``--run-path``,
``--run_path``). The option list is read from torchrun's own parser, so a flag added to
shaver, or an option added to torchrun, that clashes fails here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import socket
import subprocess
import sys

import pytest
import torch

from shaver.attribution.result import Attribution
from shaver.cli import build_parser, main
from test_readme import README, shell_commands
from train_data import make_learnable

#: Older spellings kept for plain `shaver` commands, each with a sibling that torchrun takes.
LEGACY = {"--run": "--run-dir"}


def torchrun_parse(argv: list[str]) -> argparse.Namespace:
    """torchrun's own parsing of ``argv`` (its arguments, without `torchrun`); raises
    AssertionError with torchrun's message where it refuses them."""
    from torch.distributed.run import parse_args

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parse_args(argv)
    except SystemExit:
        raise AssertionError(err.getvalue().strip().splitlines()[-1]) from None


def _options(parser: argparse.ArgumentParser, path=()):
    """(subcommand path, option action) of every option of every shaver command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif action.option_strings:
            yield path, action


def _clashes(path: tuple[str, ...], action: argparse.Action, option: str) -> str | None:
    """torchrun's error for `torchrun --nproc-per-node 2 -m shaver PATH OPTION [VALUE]` (or
    `OPTION=VALUE`), None when the arguments reach shaver whole."""
    value = [] if action.nargs == 0 else ["1"]
    for argv in ([option, *value], [f"{option}=1"]):
        try:
            args = torchrun_parse(["--nproc-per-node", "2", "-m", "shaver", *path, *argv])
        except AssertionError as exc:
            return str(exc)
        assert args.training_script == "shaver" and args.training_script_args == [*path, *argv]
    return None


def test_no_shaver_flag_clashes_with_torchrun():
    """Every option string of every command (the ones torchrun launches, train and
    attribute, and all others) reaches shaver whole, bar the legacy spellings."""
    from torch.distributed.run import get_args_parser

    torchrun_options = set(get_args_parser()._option_string_actions)
    assert {"--run-path", "--nproc-per-node", "--nnodes"} <= torchrun_options
    checked, clashing = 0, set()
    for path, action in _options(build_parser()):
        for option in action.option_strings:
            error = _clashes(path, action, option)
            checked += 1
            if error is not None:
                assert option in LEGACY, f"shaver {' '.join(path)} {option}: {error}"
                assert LEGACY[option] in action.option_strings  # the spelling torchrun takes
                clashing.add(option)
    assert checked > 100  # every command's options were seen
    assert clashing == set(LEGACY)  # the legacy spelling really clashes (or drop it here)


def test_the_clash_detector_sees_torchrun_refusing():
    with pytest.raises(AssertionError, match="ambiguous option: --run could match --run-path"):
        torchrun_parse(["--nproc-per-node", "2", "-m", "shaver", "attribute", "--run", "r"])


def test_run_dir_and_run_are_one_option():
    for spelling in ("--run-dir", "--run"):
        args = build_parser().parse_args(["attribute", spelling, "runs/x"])
        assert str(args.run) == "runs/x"
    for command in ("evaluate", "prune"):
        assert str(build_parser().parse_args([command, "--run-dir", "r"]).run) == "r"


def test_double_dash_form_reaches_shaver_whole():
    """`torchrun ... -m shaver -- attribute --run DIR`: torchrun reads nothing after `--`."""
    args = torchrun_parse(["--nproc-per-node", "2", "-m", "shaver", "--", "attribute",
                           "--run", "r", "--nnodes", "3"])
    assert args.nnodes == "1:1"  # torchrun's own default: "--nnodes 3" went to shaver
    assert args.training_script_args == ["attribute", "--run", "r", "--nnodes", "3"]


def readme_torchrun_lines() -> list[str]:
    lines = [c for c in shell_commands(README) if c.startswith("torchrun ")]
    assert {shlex.split(c)[shlex.split(c).index("shaver") + 1] for c in lines} == {
        "train", "attribute"}
    return lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_torchrun(line: str, replace: dict[str, str], extra: list[str], tmp_path) -> None:
    """Run a README torchrun line with `python -m torch.distributed.run` (what the torchrun
    script runs), its example paths replaced and ``extra`` shaver flags appended."""
    for old, new in replace.items():
        line = re.sub(rf"(?<=\s){re.escape(old)}(?=\s|$)", new, line)
    argv = shlex.split(line)[1:] + extra
    # torchrun's own options also read PET_* variables: a free port, the line unchanged
    env = {**os.environ, "PET_MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", *argv], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


@pytest.mark.slow
def test_readme_torchrun_lines_run_and_two_ranks_equal_one(tmp_path):
    """Both README lines with 2 processes on gloo: the training writes a run, and the
    2-rank attribution of it equals the 1-rank one."""
    train_line, attribute_line = readme_torchrun_lines()
    data = make_learnable(tmp_path / "data", rows=1200)
    run = tmp_path / "run"
    paths = {"4": "2", "data/criteo": str(data.path), "runs/criteo-deepfm": str(run)}
    _run_torchrun(train_line, paths, ["--epochs", "1", "--batch-size", "128", "--embed-dim",
                                      "4", "--device", "cpu", "--quiet"], tmp_path)
    assert (run / "model.safetensors").is_file()
    settings = ["--max-samples", "70", "--batch-size", "8", "--seed", "5", "--antithetic",
                "--device", "cpu", "--quiet"]
    two = tmp_path / "two.safetensors"
    _run_torchrun(attribute_line, paths, [*settings, "--out", str(two)], tmp_path)
    one = tmp_path / "one.safetensors"
    assert main(["attribute", "--run-dir", str(run), *settings, "--out", str(one)]) == 0
    two_ranks, one_rank = Attribution.load(two), Attribution.load(one)
    assert two_ranks.settings["world_size"] == 2 and one_rank.settings["world_size"] == 1
    assert two_ranks.count == one_rank.count == 70
    assert torch.allclose(two_ranks.phi, one_rank.phi, atol=1e-7)
    assert torch.allclose(two_ranks.stderr, one_rank.stderr, atol=1e-7)
