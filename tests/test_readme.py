"""Every command of the README works as written.

* Each `shaver ...` line of the README's shell blocks parses with the real argument parser:
  subcommands and options exist as written. A `torchrun ... -m shaver ...` line is parsed
  by torchrun's real parser first, then what it hands to shaver by shaver's.
* `--help` of every registered command exits 0.
* The Python API example runs as written (slow), on a tiny MovieLens-shaped dataset placed
  in the built-in dataset cache, so no download is needed.
* The "your own data" walk-through runs as written: its files (CSV and spec blocks, each
  named in the text just before it) are written to a folder, then every `shaver` command
  of the section runs there in order (the libfm input is the libfm fixture).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shaver.cli import build_parser, main
from shaver.data.store import open_dataset

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCH_README = ROOT / "bench" / "README.md"
FIX = Path(__file__).parent / "fixtures" / "data"
WALKTHROUGH = "## Your own data in five minutes"
ML_FIELDS = ["user", "item", "age", "gender", "occupation", "zip", "release_year", "genre"]


def fenced_blocks(language: str, path: Path = README) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def shell_commands(path: Path = README, text: str | None = None) -> list[str]:
    """The command lines of the bash blocks of ``path`` (or of ``text``), comments dropped."""
    text = path.read_text(encoding="utf-8") if text is None else text
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def shaver_argv(command: str) -> list[str] | None:
    """The arguments after `shaver`, None for other commands. A `torchrun ...` line is first
    parsed by torchrun's own parser (which refuses flags it takes for its own); shaver gets
    what torchrun passes to `-m shaver`."""
    words = shlex.split(command)
    if words[0] == "shaver":
        return words[1:]
    if words[0] == "torchrun":
        from torch.distributed.run import parse_args

        try:
            args = parse_args(words[1:])
        except SystemExit as exc:
            pytest.fail(f"torchrun refuses the README command ({exc.code}): {command}")
        assert args.module and args.training_script == "shaver", command
        return list(args.training_script_args)
    return None


def test_readme_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert lines[2:6] == ["```bash", lines[3], lines[4], "```"]
    assert lines[3].startswith("make demo") and lines[4].startswith("make test")


@pytest.mark.parametrize(("path", "least"), [(README, 12), (BENCH_README, 4)])
def test_every_shell_command_parses_as_written(path, least):
    commands = [c for c in shell_commands(path) if shaver_argv(c) is not None]
    assert len(commands) >= least  # e.g. the pipeline, benchmark and distributed examples
    parser = build_parser()
    for command in commands:
        try:
            parser.parse_args(shaver_argv(command))
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"README command does not parse ({exc.code}): {command}")
    others = {c.split()[0] for c in shell_commands(path) if shaver_argv(c) is None}
    assert others <= {"make"}, others


def _subcommand_paths(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[str, ...]]:
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths += _subcommand_paths(sub, (*prefix, name))
    return paths


def test_help_of_every_command(capsys):
    paths = _subcommand_paths(build_parser())
    for needed in (("bench",), ("report",), ("demo",), ("train",), ("data", "prepare")):
        assert needed in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([*path, "--help"])
        assert exit_info.value.code == 0, path
        assert "usage: shaver" in capsys.readouterr().out


@pytest.mark.slow
def test_console_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "shaver", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "bench" in proc.stdout and "demo" in proc.stdout


def _tiny_movielens(cache: Path) -> None:
    """A learnable dataset with MovieLens-100k's fields where load_builtin looks for it."""
    from shaver.data.builtin import CACHE_VERSION
    from shaver.data.store import write_prepared

    rng = np.random.default_rng(0)
    dims = [30, 40, 7, 2, 21, 25, 10, 12]
    rows = 1500
    offsets = np.concatenate([[0], np.cumsum(dims)[:-1]])
    local = np.stack([rng.integers(0, d, rows) for d in dims], axis=1)
    ids = local + offsets
    logit = rng.normal(0, 1.5, sum(dims))[ids].sum(1)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    cut = [int(rows * 0.8), int(rows * 0.9)]
    split_ids, split_y, split_rows = (np.split(a, cut) for a in (ids, labels, np.arange(rows)))
    splits = {s: (split_ids[i], split_y[i], split_rows[i])
              for i, s in enumerate(("train", "val", "test"))}
    vocab = {f: [f"{f}{j}" for j in range(d)] for f, d in zip(ML_FIELDS, dims)}
    write_prepared(cache / f"movielens-100k-{CACHE_VERSION}", field_names=ML_FIELDS,
                   vocabularies=vocab, splits=splits,
                   frequencies=np.bincount(split_ids[0].reshape(-1), minlength=sum(dims)))


@pytest.mark.slow
def test_python_example_runs_as_written(tmp_path):
    (example,) = fenced_blocks("python")
    cache = tmp_path / "cache"
    _tiny_movielens(cache)
    env = {**os.environ, "SHAVER_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    shown = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-2000:]}"
    assert [line.split()[0] for line in lines[:4]] == [
        "sparsity=0.5", "sparsity=0.99", "table_bytes=1/16", "bytes=614400"], shown
    artifact = tmp_path / "deepfm-600KiB.shaver"
    assert 0 < artifact.stat().st_size <= 600 * 1024  # the byte budget holds to the byte
    assert int(lines[3].split()[4]) == artifact.stat().st_size, shown  # as the row said
    assert len(lines) > 4 and lines[4].startswith("["), shown  # the runtime's probabilities


def readme_section(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def named_files(section: str) -> dict[str, str]:
    """The csv/yaml blocks of a section, each under the last file name quoted before it."""
    files, previous_end = {}, 0
    for block in re.finditer(r"^```(csv|yaml)\n(.*?)^```", section, flags=re.M | re.S):
        names = re.findall(r"`([\w-]+\.(?:csv|yaml))`", section[previous_end:block.start()])
        assert names, f"no file name before the block at {block.start()}"
        files[names[-1]] = block.group(2)
        previous_end = block.end()
    return files


def test_own_data_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    section = readme_section(WALKTHROUGH)
    files = named_files(section)
    assert set(files) == {"clicks.csv", "clicks.yaml", "new.csv", "libfm.yaml", "history.csv",
                          "history.yaml"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "train.libfm").write_bytes((FIX / "libfm_small.txt").read_bytes())
    commands = [shaver_argv(c) for c in shell_commands(text=section)]
    steps = [argv[0] if argv[0] != "data" else argv[1] for argv in commands]
    assert steps == ["prepare", "train", "attribute", "prune", "export", "predict", "prepare",
                     "prepare"]
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        capsys.readouterr()
        assert main(argv) == 0, argv
        if argv[0] == "predict":
            printed = capsys.readouterr().out.split()
            assert printed[0] == "probability" and len(printed) == 3
            assert all(0 < float(p) < 1 for p in printed[1:])
    assert (tmp_path / "data" / "libfm" / "meta.json").is_file()
    history = open_dataset(tmp_path / "data" / "history")
    assert history.layout.describe(history.field_names) == (
        "seen: bag of <= 4, mean; tags: bag of <= 8, sum, weighted")

