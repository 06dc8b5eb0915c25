"""A corpus of bad inputs across every command: each is refused with one line on stderr
(``error: ...``, exit status 2, no traceback, nothing on stdout), leaves nothing behind in
the output location and changes nothing already stored.

Every case runs ``shaver.cli.main`` in-process on one shared tiny world (dataset, run,
attribution, pruned directory, artifact); before and after each case the whole world is
listed (path, size, modification time), so a file left behind, rewritten or removed fails
the case. Cases of ``prune`` and ``fleet`` are those that already behave; their ``--out``
cases come with their redesign.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from shaver.attribution.result import Attribution
from shaver.cli import main
from shaver.data.store import open_dataset, write_prepared
from shaver.errors import ECHO_LIMIT, AttributionError, SpecError, shown
from shaver.fileio import load_yaml
from shaver.models.registry import build_model
from shaver.train.checkpoint import model_fingerprint, save_run

FIELD_DIMS = [3, 4, 2]  # of the hand-made datasets of train's refusals
DIM = 4

BOMB = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9 if p else ['x'] * 9)}]\n"
               for p, c in zip(["", *"abcdefgh"], "abcdefghi"))


def _write(root: Path, name: str, content: str | bytes) -> Path:
    path = root / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _prepared(path: Path, val_rows: int, test_labels: float | None) -> None:
    """A 3-field dataset whose val split has ``val_rows`` rows and test split labels all
    ``test_labels`` (None: both labels)."""
    rng = np.random.default_rng(0)
    def split(rows, label=None):
        ids = np.stack([rng.integers(0, d, rows) for d in FIELD_DIMS], 1) + np.array([0, 3, 7])
        y = (np.arange(rows) % 2).astype(np.float32) if label is None else \
            np.full(rows, label, np.float32)
        return ids.astype(np.int32), y, np.arange(rows)
    write_prepared(path, field_names=["f0", "f1", "f2"],
                   vocabularies={f"f{i}": [f"w{j}" for j in range(d)]
                                 for i, d in enumerate(FIELD_DIMS)},
                   splits={"train": split(40), "val": split(val_rows),
                           "test": split(10, test_labels)},
                   frequencies=np.ones(sum(FIELD_DIMS), np.int64))


def _flip_tensor_bit(src: Path, dst: Path, name: str) -> None:
    """Copy ``src`` (safetensors) to ``dst`` with one bit of tensor ``name`` flipped."""
    raw = bytearray(src.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    start = json.loads(raw[8:8 + header_len])[name]["data_offsets"][0]
    raw[8 + header_len + start + 1] ^= 0x10
    dst.write_bytes(bytes(raw))


def _run_with_random_phi(root: Path) -> Path:
    """root/ds prepared by `shaver data prepare` from root/raw.csv (so artifacts read raw
    rows), an untrained DeepFM run root/run on it and a random-phi attribution beside it."""
    assert main(["data", "prepare", "--spec", str(root / "spec.yaml"), "--input",
                 str(root / "raw.csv"), "--out", str(root / "ds"), "-q"]) == 0
    dataset = open_dataset(root / "ds")
    torch.manual_seed(0)
    model = build_model("deepfm", dataset.field_dims, embed_dim=DIM, mlp_dims=[8]).eval()
    run = save_run(root / "run", model, dataset=dataset, metrics={}, seed=0, train_config={})
    n, m = sum(dataset.field_dims), len(dataset.field_dims)
    phi = torch.from_numpy(np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32))
    Attribution(phi=phi, stderr=torch.zeros(n, DIM), count=5, codebook=torch.ones(m, DIM),
                placeholder="codebook", model_fingerprint=model_fingerprint(model),
                dataset_fingerprint=dataset.fingerprint, field_dims=dataset.field_dims,
                ).save(run / "attribution-codebook.safetensors")
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("world")
    _write(root, "raw.csv", "label,a,b\n" + "".join(f"{i % 2},a{i % 3},b{i % 5}\n"
                                                   for i in range(60)))
    spec = ("input: {format: csv, header: true}\nlabel: {column: label}\n"
            "split: {method: random, fractions: [0.6, 0.2, 0.2]}\nfields: [a, b]\n")
    _write(root, "spec.yaml", spec)
    run = _run_with_random_phi(root)
    attr = run / "attribution-codebook.safetensors"
    assert main(["prune", "--run-dir", str(run), "--method", "shaver", "--sparsity", "0.5",
                 "--out", str(root / "pruned"), "-q", "--device", "cpu"]) == 0
    (pruned,) = [p for p in (root / "pruned").iterdir() if p.is_dir()]
    (root / "pruned" / "cut").symlink_to(pruned.name)
    assert main(["export", "--pruned", str(pruned), "--out", str(root / "model.shaver")]) == 0
    art = (root / "model.shaver").read_bytes()
    _write(root, "truncated.shaver", art[:-9])
    flipped = bytearray(art)
    flipped[-3] ^= 1
    _write(root, "flipped.shaver", bytes(flipped))
    _write(root, "v9.shaver", art[:8] + (9).to_bytes(4, "little") + art[12:])
    _write(root, "garbage.shaver", b"PK\x03\x04" + bytes(200))
    _write(root, "empty.shaver", b"")
    _prepared(root / "ds-noval", 0, None)
    _prepared(root / "ds-onelabel", 10, 1.0)
    _flip_tensor_bit(attr, root / "attr-flipped-phi.safetensors", "phi")
    # the same attribution computed with bins, one of whose bits flips
    binned = Attribution.load(attr)
    binned.bins = torch.stack([binned.phi / 2, binned.phi / 2])
    binned.bin_edges = [0, 4, 8]
    binned.save(root / "attr-binned.safetensors")
    _flip_tensor_bit(root / "attr-binned.safetensors", root / "attr-flipped-bins.safetensors",
                     "bins")
    other = Attribution.load(attr)
    other.model_fingerprint = "0" * 16
    other.save(root / "attr-other-model.safetensors")
    with safe_open(str(attr), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta["count"] = "43"  # edited metadata, stale checksum
    save_file(tensors, str(root / "attr-edited.safetensors"), metadata=meta)
    (root / "a_dir").mkdir()
    _write(root, "a_file", "x\n")
    _write(root, "raw-short.csv", "label,a,b\n1,a0,b0\n0,a1\n")
    _write(root, "raw-empty.csv", "")
    _write(root, "spec-syntax.yaml", "input: {format: csv\nfields: [a]\n")
    _write(root, "spec-bomb.yaml", BOMB + spec)
    _write(root, "spec-recursive.yaml", "fields: &f [a, *f]\n")
    _write(root, "spec-deep.yaml", "fields: " + "[" * 300 + "]" * 300 + "\n")
    _write(root, "spec-nofields.yaml", "input: {format: csv, header: true}\nfields: []\n")
    _write(root, "spec-unknown.yaml", spec + "colour: blue\n")
    _write(root, "spec-fractions.yaml", spec.replace("[0.6, 0.2, 0.2]", "[0.6, 0.2, 0.3]"))
    _write(root, "spec-long.yaml", spec.replace("header: true", "header: " + "y" * 5000))
    _write(root, "spec-latin1.yaml", "name: caf\xe9\n".encode("latin-1"))
    _write(root, "spec-wide.yaml", "input: {format: csv, header: false, columns: ["
           + ", ".join(f"column{i}" for i in range(5_000)) + "]}\nlabel: {column: column0}\n"
           "fields: [zz]\n")
    _write(root, "spec-list.yaml", "- a\n- b\n")
    _write(root, "spec-format.yaml", spec.replace("csv", "parquet-ish"))
    _write(root, "spec-column.yaml", spec.replace("[a, b]", "[a, b, zz]"))
    _write(root, "spec-listkey.yaml", spec.replace("[a, b]", "[a, {name: b, max_len: 3}]"))
    _write(root, "spec-weighted.yaml", spec.replace(
        "[a, b]", "[a, {name: b, kind: list, weighted: true}]"))
    _write(root, "cfg-epochs-x.yaml", "model:\n  name: fm\ntrain:\n  epochs: \"x\"\n")
    _write(root, "cfg-lr.yaml", "model:\n  name: fm\ntrain:\n  lr: -1\n")
    _write(root, "cfg-unknown.yaml", "model:\n  name: fm\ntrain:\n  epoch: 3\n")
    _write(root, "cfg-bomb.yaml", BOMB.replace("a:", "model:", 1) + "train: {}\n")
    _write(root, "cfg-list.yaml", "- 1\n- 2\n")
    _write(root, "cfg-model.yaml", "model:\n  name: transformer\n")
    _write(root, "cfg-syntax.yaml", "model: [\n")
    _write(root, "cfg-section.yaml", "model: {name: fm}\nextra: {}\n")
    _write(root, "fleet.yaml", "classes:\n  - {name: phone, bytes: 1MiB}\n")
    _write(root, "fleet-empty.yaml", "classes: []\n")
    _write(root, "fleet-unknown.yaml", "classes:\n  - {name: a, bytes: 1MiB}\nextra: 1\n")
    _write(root, "fleet-negative.yaml", "classes:\n  - {name: a, bytes: -5}\n")
    _write(root, "fleet-dup.yaml", "classes:\n  - {name: a, bytes: 1MiB}\n"
           "  - {name: a, bytes: 2MiB}\n")
    _write(root, "fleet-values.yaml", "classes:\n  - {name: a, bytes: 1MiB, values: int3}\n")
    _write(root, "rows.csv", "a,b\na0,b1\n")
    _write(root, "rows-header.csv", "a,zz\na0,b1\n")
    _write(root, "rows-short.csv", "a,b\na0\n")
    _write(root, "rows-utf16.csv", "a,b\na0,b1\n".encode("utf-16"))
    _write(root, "rows-wide.csv", ",".join(f"column{i}" for i in range(20_000)) + "\n")
    _write(root, "ids-huge.csv", "0," + "9x" * 50_000 + "\n")
    _write(root, "ids-range.csv", "0,99\n")
    _write(root, "ids-short.csv", "0\n")
    _write(root, "ids-text.csv", "0,x\n")
    _write(root, "report.json", "{not json")
    _write(root, "report-foreign.json", json.dumps({"format": "other"}))
    return root


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (hidden ones too) -> (size, mtime in ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


#: (id, argv with {w} for the world folder, a fragment the one error line must hold)
CASES = [
    # -- the command line itself --
    ("no-command", [], "the following arguments are required: COMMAND"),
    ("unknown-command", ["bogus"], "invalid choice: 'bogus'"),
    ("unknown-flag", ["data", "info", "{w}/ds", "--bogus"], "unrecognized arguments: --bogus"),
    ("data-no-action", ["data"], "shaver data: the following arguments are required: ACTION"),
    # -- data prepare --
    ("prepare-preset", ["data", "prepare", "--preset", "nope", "--input", "{w}/raw.csv",
                        "--out", "{w}/new"],
     "unknown preset 'nope': expected one of avazu, criteo, kdd12, "
     "movielens-100k, movielens-100k-genre-token"),
    ("prepare-spec-missing", ["data", "prepare", "--spec", "{w}/none.yaml", "--input",
                              "{w}/raw.csv", "--out", "{w}/new"], "none.yaml: cannot read"),
    ("prepare-spec-dir", ["data", "prepare", "--spec", "{w}/a_dir", "--input", "{w}/raw.csv",
                          "--out", "{w}/new"], "a_dir: cannot read the spec (Is a directory)"),
    ("prepare-spec-syntax", ["data", "prepare", "--spec", "{w}/spec-syntax.yaml", "--input",
                             "{w}/raw.csv", "--out", "{w}/new"],
     "spec-syntax.yaml:2: not valid YAML (expected ',' or '}'"),
    ("prepare-spec-bomb", ["data", "prepare", "--spec", "{w}/spec-bomb.yaml", "--input",
                           "{w}/raw.csv", "--out", "{w}/new"],
     "spec-bomb.yaml: YAML aliases expand to over 10,000 nodes"),
    ("prepare-spec-recursive", ["data", "prepare", "--spec", "{w}/spec-recursive.yaml",
                                "--input", "{w}/raw.csv", "--out", "{w}/new"],
     "a YAML alias refers to itself"),
    ("prepare-spec-deep", ["data", "prepare", "--spec", "{w}/spec-deep.yaml", "--input",
                           "{w}/raw.csv", "--out", "{w}/new"],
     "spec-deep.yaml:1: YAML nested over 100 levels deep; refused"),
    ("prepare-spec-nofields", ["data", "prepare", "--spec", "{w}/spec-nofields.yaml",
                               "--input", "{w}/raw.csv", "--out", "{w}/new"],
     "'fields' must list at least one field"),
    ("prepare-spec-unknown", ["data", "prepare", "--spec", "{w}/spec-unknown.yaml", "--input",
                              "{w}/raw.csv", "--out", "{w}/new"], "unknown key 'colour'"),
    ("prepare-spec-fractions", ["data", "prepare", "--spec", "{w}/spec-fractions.yaml",
                                "--input", "{w}/raw.csv", "--out", "{w}/new"],
     "split.fractions: expected three non-negative numbers summing to 1"),
    ("prepare-spec-long-value", ["data", "prepare", "--spec", "{w}/spec-long.yaml", "--input",
                                 "{w}/raw.csv", "--out", "{w}/new"],
     "input.header: expected true, false or 'skip', found 'yyyyyyyy"),
    ("prepare-spec-latin1", ["data", "prepare", "--spec", "{w}/spec-latin1.yaml", "--input",
                             "{w}/raw.csv", "--out", "{w}/new"], "not UTF-8 text"),
    ("prepare-spec-list", ["data", "prepare", "--spec", "{w}/spec-list.yaml", "--input",
                           "{w}/raw.csv", "--out", "{w}/new"], "expected a mapping"),
    ("prepare-spec-format", ["data", "prepare", "--spec", "{w}/spec-format.yaml", "--input",
                             "{w}/raw.csv", "--out", "{w}/new"], "'parquet-ish' is not one of"),
    ("prepare-spec-wide", ["data", "prepare", "--spec", "{w}/spec-wide.yaml", "--input",
                           "{w}/raw.csv", "--out", "{w}/new"],
     "fields[0].name: unknown column 'zz' (expected one of the input columns: column0, column1"),
    ("prepare-spec-column", ["data", "prepare", "--spec", "{w}/spec-column.yaml", "--input",
                             "{w}/raw.csv", "--out", "{w}/new"], "unknown column 'zz'"),
    ("prepare-spec-list-key", ["data", "prepare", "--spec", "{w}/spec-listkey.yaml", "--input",
                               "{w}/raw.csv", "--out", "{w}/new"],
     "spec-listkey.yaml: fields[1].max_len: only list fields take one (set kind: list)"),
    ("prepare-list-weight", ["data", "prepare", "--spec", "{w}/spec-weighted.yaml", "--input",
                             "{w}/raw.csv", "--out", "{w}/new"],
     "raw.csv:2: field 'b': value 'b0' has no ':weight' (expected value:weight items, the "
     "weight a finite number >= 0 (mean pooling))"),
    ("prepare-input-missing", ["data", "prepare", "--spec", "{w}/spec.yaml", "--input",
                               "{w}/none.csv", "--out", "{w}/new"],
     "none.csv: cannot read the input (No such file or directory)"),
    ("prepare-input-short-row", ["data", "prepare", "--spec", "{w}/spec.yaml", "--input",
                                 "{w}/raw-short.csv", "--out", "{w}/new"],
     "raw-short.csv:3: found 2 columns, expected 3"),
    ("prepare-input-empty", ["data", "prepare", "--spec", "{w}/spec.yaml", "--input",
                             "{w}/raw-empty.csv", "--out", "{w}/new"],
     "raw-empty.csv: empty file (expected data rows)"),
    ("prepare-out-exists-dir", ["data", "prepare", "--spec", "{w}/spec.yaml", "--input",
                                "{w}/raw.csv", "--out", "{w}/a_dir"],
     "a_dir: output directory already exists"),
    ("prepare-out-exists-file", ["data", "prepare", "--spec", "{w}/spec.yaml", "--input",
                                 "{w}/raw.csv", "--out", "{w}/a_file"],
     "a_file: output directory already exists"),
    ("prepare-out-under-file", ["data", "prepare", "--spec", "{w}/spec.yaml", "--input",
                                "{w}/raw.csv", "--out", "{w}/a_file/new"],
     "cannot create the output's folder: {w}/a_file is a file"),
    ("prepare-workers-0", ["data", "prepare", "--spec", "{w}/spec.yaml", "--input",
                           "{w}/raw.csv", "--out", "{w}/new", "--workers", "0"],
     "argument --workers: expected a number of processes >= 1, got '0'"),
    ("prepare-workers-neg", ["data", "prepare", "--spec", "{w}/spec.yaml", "--input",
                             "{w}/raw.csv", "--out", "{w}/new", "--workers", "-3"],
     "argument --workers: expected a number of processes >= 1, got '-3'"),
    ("prepare-workers-text", ["data", "prepare", "--spec", "{w}/spec.yaml", "--input",
                              "{w}/raw.csv", "--out", "{w}/new", "--workers", "many"],
     "got 'many'"),
    ("prepare-seed-text", ["data", "prepare", "--spec", "{w}/spec.yaml", "--input",
                           "{w}/raw.csv", "--out", "{w}/new", "--seed", "x"],
     "argument --seed: invalid int value: 'x'"),
    ("prepare-join-form", ["data", "prepare", "--preset", "kdd12", "--input", "{w}/raw.csv",
                           "--out", "{w}/new", "--join", "profile"], "expected NAME=PATH"),
    ("prepare-input-mixed", ["data", "prepare", "--spec", "{w}/spec.yaml", "--input",
                             "train={w}/raw.csv", "{w}/raw.csv", "--out", "{w}/new"],
     "--input: give either plain paths or train=/val=/test= for all of them"),
    ("prepare-spec-and-preset", ["data", "prepare", "--spec", "{w}/spec.yaml", "--preset",
                                 "criteo", "--input", "{w}/raw.csv", "--out", "{w}/new"],
     "not allowed with argument"),
    # -- data info / synth --
    ("info-missing", ["data", "info", "{w}/none"],
     "none: not a prepared dataset directory (it does not exist)"),
    ("info-file", ["data", "info", "{w}/a_file"],
     "a_file: not a prepared dataset directory (it is a file)"),
    ("info-empty-dir", ["data", "info", "{w}/a_dir"],
     "a_dir: not a prepared dataset (meta.json is missing)"),
    ("info-run-dir", ["data", "info", "{w}/run"],
     "run: not a prepared dataset (meta.json is missing)"),
    ("synth-rows-0", ["data", "synth", "--rows", "0", "--out", "{w}/s.txt"],
     "rows must be positive, got 0"),
    ("synth-rows-neg", ["data", "synth", "--rows", "-5", "--out", "{w}/s.txt"],
     "rows must be positive, got -5"),
    ("synth-scale-0", ["data", "synth", "--rows", "10", "--scale", "0", "--out", "{w}/s.txt"],
     "scale"),
    ("synth-out-dir", ["data", "synth", "--rows", "10", "--out", "{w}/a_dir"],
     "a_dir: is a directory; expected the path of a file to write"),
    ("synth-rows-text", ["data", "synth", "--rows", "x", "--out", "{w}/s.txt"],
     "argument --rows: invalid int value: 'x'"),
    ("synth-like", ["data", "synth", "--rows", "10", "--like", "avazu", "--out", "{w}/s.txt"],
     "invalid choice: 'avazu'"),
    # -- train --
    ("train-data-missing", ["train", "--data", "{w}/none", "--out", "{w}/new"],
     "none: not a prepared dataset directory (it does not exist)"),
    ("train-data-file", ["train", "--data", "{w}/a_file", "--out", "{w}/new"],
     "a_file: not a prepared dataset directory (it is a file)"),
    ("train-epochs-neg", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--epochs", "-3"],
     "--epochs: expected an integer >= 1, got -3"),
    ("train-epochs-0", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--epochs", "0"],
     "--epochs: expected an integer >= 1, got 0"),
    ("train-epochs-text", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--epochs", "x"],
     "argument --epochs: invalid int value: 'x'"),
    ("train-embed-dim", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--embed-dim", "0"],
     "embed_dim must be positive, got 0"),
    ("train-lr-0", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--lr", "0"],
     "--lr: expected a number > 0, got 0.0"),
    ("train-lr-nan", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--lr", "nan"],
     "--lr: expected a number > 0, got nan"),
    ("train-lr-inf", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--lr", "inf"],
     "--lr: expected a number > 0, got inf"),
    ("train-batch-1", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--batch-size", "1"],
     "--batch-size: expected an integer >= 2, got 1"),
    ("train-weight-decay", ["train", "--data", "{w}/ds", "--out", "{w}/new",
                            "--weight-decay", "-1"],
     "--weight-decay: expected a number >= 0, got -1.0"),
    ("train-patience", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--patience", "-1"],
     "--patience: expected an integer >= 1 (or null), got -1"),
    ("train-lr-decay", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--lr-decay", "1.5"],
     "--lr-decay: expected a number in (0, 1) (or null), got 1.5"),
    ("train-seed-neg", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--seed", "-1"],
     "--seed: expected an integer >= 0, got -1"),
    ("train-optimizer", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--optimizer",
                         "sgd"], "invalid choice: 'sgd'"),
    ("train-model", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--model", "gpt"],
     "unknown model 'gpt': known models are lr, fm, deepfm"),
    ("train-config-missing", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--config",
                              "{w}/none.yaml"], "none.yaml: config file not found"),
    ("train-config-dir", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--config",
                          "{w}/a_dir"], "a_dir: is a directory, expected a YAML config file"),
    ("train-config-epochs-text", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--config",
                                  "{w}/cfg-epochs-x.yaml"],
     "cfg-epochs-x.yaml: train.epochs: expected an integer >= 1, got 'x'"),
    ("train-config-lr", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--config",
                         "{w}/cfg-lr.yaml"],
     "cfg-lr.yaml: train.lr: expected a number > 0, got -1"),
    ("train-config-unknown", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--config",
                              "{w}/cfg-unknown.yaml"], "unknown train option(s) 'epoch'"),
    ("train-config-bomb", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--config",
                           "{w}/cfg-bomb.yaml"], "cfg-bomb.yaml: YAML aliases expand to over"),
    ("train-config-list", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--config",
                           "{w}/cfg-list.yaml"], "expected a mapping of options, found list"),
    ("train-config-model", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--config",
                            "{w}/cfg-model.yaml"], "unknown model 'transformer'"),
    ("train-config-syntax", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--config",
                             "{w}/cfg-syntax.yaml"], "cfg-syntax.yaml:2: invalid YAML"),
    ("train-config-section", ["train", "--data", "{w}/ds", "--out", "{w}/new", "--config",
                              "{w}/cfg-section.yaml"], "unknown section(s) extra"),
    ("train-out-holds-run", ["train", "--data", "{w}/ds", "--out", "{w}/run", "--epochs", "1"],
     "already holds a run"),
    ("train-val-empty", ["train", "--data", "{w}/ds-noval", "--out", "{w}/new"],
     "ds-noval: the val split has no rows"),
    ("train-test-one-label", ["train", "--data", "{w}/ds-onelabel", "--out", "{w}/new"],
     "ds-onelabel: all 10 rows of the test split have label 1"),
    ("train-out-file", ["train", "--data", "{w}/ds", "--out", "{w}/a_file"],
     "a_file: is a file; the output must be a run directory"),
    # -- evaluate --
    ("evaluate-run-missing", ["evaluate", "--run-dir", "{w}/none"],
     "none: not a run directory (it does not exist)"),
    ("evaluate-run-is-dataset", ["evaluate", "--run-dir", "{w}/ds"],
     "ds/config.json: missing (not a shaver run directory)"),
    ("evaluate-split", ["evaluate", "--run-dir", "{w}/run", "--split", "dev"],
     "unknown split 'dev': expected one of train, val, test"),
    ("evaluate-batch", ["evaluate", "--run-dir", "{w}/run", "--batch-size", "0"],
     "batch_size must be an integer >= 1, got 0"),
    ("evaluate-device", ["evaluate", "--run-dir", "{w}/run", "--device", "tpu"],
     "unknown device 'tpu': expected auto, cpu, cuda or cuda:N"),
    ("evaluate-other-data", ["evaluate", "--run-dir", "{w}/run", "--data", "{w}/ds-noval"],
     "ds-noval"),
    # -- attribute --
    ("attribute-run-missing", ["attribute", "--run-dir", "{w}/none"],
     "none: not a run directory (it does not exist)"),
    ("attribute-run-file", ["attribute", "--run-dir", "{w}/a_file"],
     "a_file: not a run directory (it is a file)"),
    ("attribute-device", ["attribute", "--run-dir", "{w}/run", "--device", "tpu"],
     "unknown device 'tpu'"),
    ("attribute-stop-fraction", ["attribute", "--run-dir", "{w}/run", "--stop-fraction", "nan",
                                 "--max-samples", "4"], "stop fraction must be in (0, 1), got nan"),
    ("attribute-surrogate-points", ["attribute", "--run-dir", "{w}/run", "--surrogate-points",
                                    "0", "--max-samples", "4"],
     "surrogate_points must be an integer >= 1, got 0"),
    ("attribute-out-dir", ["attribute", "--run-dir", "{w}/run", "--out", "{w}/a_dir"],
     "a_dir: is a directory; expected the path of a file to write"),
    ("attribute-out-under-file", ["attribute", "--run-dir", "{w}/run", "--out",
                                  "{w}/a_file/a.safetensors"],
     "the directory {w}/a_file is not a directory"),
    ("attribute-out-missing-dir", ["attribute", "--run-dir", "{w}/run", "--out",
                                   "{w}/none/a.safetensors"],
     "the directory {w}/none does not exist"),
    ("attribute-max-seconds", ["attribute", "--run-dir", "{w}/run", "--max-seconds", "-1"],
     "--max-seconds must be > 0, got -1.0"),
    ("attribute-max-seconds-0", ["attribute", "--run-dir", "{w}/run", "--max-seconds", "0"],
     "--max-seconds must be > 0, got 0.0"),
    ("attribute-max-seconds-nan", ["attribute", "--run-dir", "{w}/run", "--max-seconds",
                                   "nan"], "--max-seconds must be > 0, got nan"),
    ("attribute-max-samples", ["attribute", "--run-dir", "{w}/run", "--max-samples", "0"],
     "--max-samples must be >= 1, got 0"),
    ("attribute-batch", ["attribute", "--run-dir", "{w}/run", "--batch-size", "0"],
     "--batch-size must be >= 1, got 0"),
    ("attribute-checkpoint-every", ["attribute", "--run-dir", "{w}/run", "--checkpoint-every",
                                    "0"], "--checkpoint-every must be > 0, got 0.0"),
    ("attribute-compute-epochs", ["attribute", "--run-dir", "{w}/run", "--compute-epochs",
                                  "-2"], "--compute-epochs must be > 0, got -2.0"),
    ("attribute-compute-epochs-unrecorded", ["attribute", "--run-dir", "{w}/run",
                                             "--compute-epochs", "1"],
     "no training epoch seconds recorded"),
    ("attribute-resume-no-state", ["attribute", "--run-dir", "{w}/run", "--resume"],
     "attribution-codebook.state.safetensors: no running state to resume"),
    ("attribute-tolerance-under-cut", ["attribute", "--run-dir", "{w}/run", "--tolerance",
                                       "0.05"], "--tolerance is the threshold of --stop sage"),
    ("attribute-tolerance-default-value", ["attribute", "--run-dir", "{w}/run", "--tolerance",
                                           "0.01"], "add --stop sage or drop --tolerance"),
    ("attribute-sage-with-cut-options", ["attribute", "--run-dir", "{w}/run", "--stop", "sage",
                                         "--stop-draws", "5", "--stop-fraction", "0.1"],
     "--stop-fraction, --stop-draws belong to --stop cut"),
    ("attribute-stop-budgets", ["attribute", "--run-dir", "{w}/run", "--stop-budgets", "half"],
     "--stop-budgets: expected sparsities such as 0.5,0.95,0.99, got 'half'"),
    ("attribute-stop-draws", ["attribute", "--run-dir", "{w}/run", "--stop-draws", "0",
                              "--max-samples", "8"], "stop draws must be an integer >= 1, got 0"),
    ("attribute-min-passes", ["attribute", "--run-dir", "{w}/run", "--min-passes", "-1",
                              "--max-samples", "8"], "min_passes must be >= 0"),
    ("attribute-bins", ["attribute", "--run-dir", "{w}/run", "--bins", "-1", "--max-samples",
                        "8"], "bins must be >= 0"),
    ("attribute-bins-too-many", ["attribute", "--run-dir", "{w}/run", "--bins", "1000",
                                 "--max-samples", "8"],
     "1000 bins need at least 1000 walk positions"),
    ("attribute-surrogate-rows", ["attribute", "--run-dir", "{w}/run", "--surrogate-rows", "0",
                                  "--max-samples", "8"], "surrogate_rows must be >= 1"),
    ("attribute-data-split", ["attribute", "--run-dir", "{w}/run", "--data", "dev",
                              "--max-samples", "8"], "data 'dev': unknown split 'dev'"),
    ("attribute-dataset-other", ["attribute", "--run-dir", "{w}/run", "--dataset",
                                 "{w}/ds-noval"], "ds-noval"),
    ("attribute-placeholder", ["attribute", "--run-dir", "{w}/run", "--placeholder", "mean"],
     "invalid choice: 'mean'"),
    ("attribute-seed-text", ["attribute", "--run-dir", "{w}/run", "--seed", "x"],
     "argument --seed: invalid int value: 'x'"),
    ("attribute-half-life-alone", ["attribute", "--run-dir", "{w}/run", "--half-life", "5"],
     "--attribution and --half-life go with --update"),
    ("attribute-update-half-life", ["attribute", "--run-dir", "{w}/run", "--update",
                                    "--half-life", "-1"], "--half-life must be > 0, got -1.0"),
    ("attribute-update-no-state", ["attribute", "--run-dir", "{w}/run", "--update", "--data",
                                   "val"], "--update needs the attribution and its running state"),
    ("attribute-update-stop", ["attribute", "--run-dir", "{w}/run", "--update", "--stop",
                               "cut"], "--update continues the attribution with its own "
     "settings; drop --stop"),
    ("attribute-update-min-passes", ["attribute", "--run-dir", "{w}/run", "--update",
                                     "--min-passes", "2"], "drop --min-passes"),
    ("attribute-update-bins", ["attribute", "--run-dir", "{w}/run", "--update", "--bins", "4"],
     "drop --bins"),
    ("attribute-update-checkpoint", ["attribute", "--run-dir", "{w}/run", "--update",
                                     "--checkpoint-every", "5"], "drop --checkpoint-every"),
    ("attribute-update-stop-rule", ["attribute", "--run-dir", "{w}/run", "--update",
                                    "--stop-budgets", "0.5", "--stop-draws", "9"],
     "drop --stop-budgets, --stop-draws"),
    ("attribute-update-antithetic", ["attribute", "--run-dir", "{w}/run", "--update",
                                     "--antithetic"], "drop --antithetic"),
    ("attribute-update-out-dir", ["attribute", "--run-dir", "{w}/run", "--update", "--out",
                                  "{w}/a_dir"], "a_dir: is a directory"),
    ("attribute-update-and-refresh", ["attribute", "--run-dir", "{w}/run", "--update",
                                      "--refresh-from", "{w}/run"],
     "--refresh-from and --update / --half-life do not go together"),
    ("attribute-refresh-data", ["attribute", "--run-dir", "{w}/run", "--refresh-from",
                                "{w}/run", "--data", "train"],
     "--refresh-from reuses the old attribution's data and settings; drop --data"),
    ("attribute-refresh-control-variate", ["attribute", "--run-dir", "{w}/run",
                                           "--refresh-from", "{w}/run", "--control-variate"],
     "drop --control-variate"),
    ("attribute-refresh-dtype", ["attribute", "--run-dir", "{w}/run", "--refresh-from",
                                 "{w}/run", "--dtype", "fp32", "--antithetic"],
     "drop --antithetic, --dtype"),
    ("attribute-refresh-stop", ["attribute", "--run-dir", "{w}/run", "--refresh-from",
                                "{w}/run", "--stop", "sage"], "drop --stop"),
    ("attribute-refresh-missing-run", ["attribute", "--run-dir", "{w}/run", "--refresh-from",
                                       "{w}/none"],
     "none: not a run directory (it does not exist)"),
    ("attribute-refresh-other-model", ["attribute", "--run-dir", "{w}/run", "--refresh-from",
                                       "{w}/run", "--attribution",
                                       "{w}/attr-other-model.safetensors"],
     "attr-other-model.safetensors: computed for model 0000000000000000"),
    ("attribute-refresh-flipped", ["attribute", "--run-dir", "{w}/run", "--refresh-from",
                                   "{w}/run", "--attribution",
                                   "{w}/attr-flipped-phi.safetensors"],
     "attr-flipped-phi.safetensors: checksum mismatch"),
    # -- prune (inputs that already behave; --out cases come with its redesign) --
    ("prune-sparsity-range", ["prune", "--run-dir", "{w}/run", "--sparsity", "1.5"],
     "[0, 1]"),
    ("prune-params-float", ["prune", "--run-dir", "{w}/run", "--params", "1.0"],
     "integer count"),
    ("prune-bytes-small", ["prune", "--run-dir", "{w}/run", "--bytes", "10B"],
     "is below the smallest artifact this model can have"),
    ("prune-no-budget", ["prune", "--run-dir", "{w}/run"], "at least one budget"),
    ("prune-attribution-missing", ["prune", "--run-dir", "{w}/run", "--sparsity", "0.5",
                                   "--attribution", "{w}/none.safetensors"], "not found"),
    ("prune-attribution-flipped-phi", ["prune", "--run-dir", "{w}/run", "--sparsity", "0.5",
                                       "--method", "shaver", "--attribution",
                                       "{w}/attr-flipped-phi.safetensors", "--out", "{w}/new"],
     "attr-flipped-phi.safetensors: checksum mismatch: the attribution file is corrupted"),
    ("prune-attribution-flipped-bins", ["prune", "--run-dir", "{w}/run", "--sparsity", "0.5",
                                        "--method", "shaver", "--attribution",
                                        "{w}/attr-flipped-bins.safetensors", "--out",
                                        "{w}/new"],
     "attr-flipped-bins.safetensors: checksum mismatch"),
    ("prune-attribution-edited", ["prune", "--run-dir", "{w}/run", "--sparsity", "0.5",
                                  "--method", "shaver", "--attribution",
                                  "{w}/attr-edited.safetensors", "--out", "{w}/new"],
     "attr-edited.safetensors: checksum mismatch"),
    ("prune-attribution-garbage", ["prune", "--run-dir", "{w}/run", "--sparsity", "0.5",
                                   "--attribution", "{w}/garbage.shaver", "--out", "{w}/new"],
     "garbage.shaver: not a readable safetensors file"),
    ("prune-method-conflict", ["prune", "--run-dir", "{w}/run", "--sparsity", "0.5",
                               "--method", "auto", "--scorer", "magnitude"],
     "--method auto chooses the scorer"),
    ("prune-scorer", ["prune", "--run-dir", "{w}/run", "--sparsity", "0.5", "--scorer", "l1"],
     "invalid choice: 'l1'"),
    ("prune-sparsity-nan", ["prune", "--run-dir", "{w}/run", "--sparsity", "nan"],
     "sparsity must be a fraction in [0, 1], got 'nan'"),
    ("prune-sparsity-negative", ["prune", "--run-dir", "{w}/run", "--sparsity", "-0.1"],
     "sparsity must be a fraction in [0, 1], got -0.1"),
    ("prune-run-missing", ["prune", "--run-dir", "{w}/none", "--sparsity", "0.5"],
     "none: not a run directory (it does not exist)"),
    # -- export --
    ("export-pruned-missing", ["export", "--pruned", "{w}/none"],
     "none: not a pruned directory (expected pruned.json + model.safetensors)"),
    ("export-pruned-is-run", ["export", "--pruned", "{w}/run", "--out", "{w}/m.shaver"],
     "run: not a pruned directory (pruned.json is missing)"),
    ("export-out-dir", ["export", "--pruned", "{w}/pruned/cut", "--out", "{w}/a_dir"],
     "a_dir: is a directory; expected the path of a file to write"),
    ("export-onnx-out-dir", ["export", "--artifact", "{w}/model.shaver", "--format", "onnx",
                             "--out", "{w}/a_dir"], "a_dir: is a directory"),
    ("export-out-missing-dir", ["export", "--pruned", "{w}/pruned/cut", "--out",
                                "{w}/none/m.shaver"], "the directory {w}/none does not exist"),
    ("export-out-under-file", ["export", "--pruned", "{w}/pruned/cut", "--out",
                               "{w}/a_file/m.shaver"],
     "the directory {w}/a_file is not a directory"),
    ("export-shaver-from-artifact", ["export", "--artifact", "{w}/model.shaver", "--out",
                                     "{w}/m.shaver"], "--format shaver exports a pruned directory"),
    ("export-onnx-garbage", ["export", "--artifact", "{w}/garbage.shaver", "--format", "onnx",
                             "--out", "{w}/m.onnx"], "garbage.shaver: not a shaver artifact"),
    ("export-onnx-flipped", ["export", "--artifact", "{w}/flipped.shaver", "--format", "onnx",
                             "--out", "{w}/m.onnx"], "flipped.shaver: checksum mismatch"),
    ("export-dtype", ["export", "--pruned", "{w}/pruned/cut", "--dtype", "int3"],
     "argument --dtype: invalid choice: 'int3'"),
    ("export-head", ["export", "--pruned", "{w}/pruned/cut", "--head", "int4"],
     "argument --head: invalid choice: 'int4'"),
    ("export-both-sources", ["export", "--pruned", "{w}/pruned/cut", "--artifact",
                             "{w}/model.shaver"], "not allowed with argument"),
    # -- inspect --
    ("inspect-missing", ["inspect", "{w}/none.shaver"], "none.shaver: cannot read"),
    ("inspect-dir", ["inspect", "{w}/a_dir"], "a_dir: is a directory, not a shaver artifact"),
    ("inspect-empty", ["inspect", "{w}/empty.shaver"], "empty.shaver: truncated (0 bytes)"),
    ("inspect-garbage", ["inspect", "{w}/garbage.shaver"],
     "garbage.shaver: not a shaver artifact (bad magic bytes)"),
    ("inspect-truncated", ["inspect", "{w}/truncated.shaver"], "truncated.shaver: truncated"),
    ("inspect-flipped", ["inspect", "{w}/flipped.shaver"],
     "flipped.shaver: checksum mismatch in section"),
    ("inspect-version", ["inspect", "{w}/v9.shaver"], "v9.shaver: format version 9 is not"),
    ("inspect-attribution", ["inspect", "{w}/run/attribution-codebook.safetensors"],
     "not a shaver artifact"),
    # -- predict --
    ("predict-artifact-missing", ["predict", "--artifact", "{w}/none.shaver", "--input",
                                  "{w}/rows.csv"], "none.shaver: cannot read"),
    ("predict-artifact-garbage", ["predict", "--artifact", "{w}/garbage.shaver", "--input",
                                  "{w}/rows.csv"], "garbage.shaver: not a shaver artifact"),
    ("predict-artifact-flipped", ["predict", "--artifact", "{w}/flipped.shaver", "--input",
                                  "{w}/rows.csv"], "flipped.shaver: checksum mismatch"),
    ("predict-input-missing", ["predict", "--artifact", "{w}/model.shaver", "--input",
                               "{w}/none.csv"],
     "none.csv: cannot read the input (No such file or directory)"),
    ("predict-input-header", ["predict", "--artifact", "{w}/model.shaver", "--input",
                              "{w}/rows-header.csv"],
     "rows-header.csv:1: the header has no column b"),
    ("predict-input-short", ["predict", "--artifact", "{w}/model.shaver", "--input",
                             "{w}/rows-short.csv"], "rows-short.csv:2: 1 values, the header has 2"),
    ("predict-input-utf16", ["predict", "--artifact", "{w}/model.shaver", "--input",
                             "{w}/rows-utf16.csv"], "rows-utf16.csv:1: UTF-16 text"),
    ("predict-ids-range", ["predict", "--artifact", "{w}/model.shaver", "--input",
                           "{w}/ids-range.csv", "--ids"],
     "ids-range.csv: id 99 in row 0, field 1 is outside that field's "
     "range [4, 10)"),
    ("predict-ids-short", ["predict", "--artifact", "{w}/model.shaver", "--input",
                           "{w}/ids-short.csv", "--ids"], "ids-short.csv:1: 1 ids, expected 2"),
    ("predict-ids-text", ["predict", "--artifact", "{w}/model.shaver", "--input",
                          "{w}/ids-text.csv", "--ids"], "ids-text.csv:1: ids must be integers"),
    ("predict-output-dir", ["predict", "--artifact", "{w}/model.shaver", "--input",
                            "{w}/rows.csv", "--output", "{w}/a_dir"], "a_dir: is a directory"),
    ("predict-output-missing-dir", ["predict", "--artifact", "{w}/model.shaver", "--input",
                                    "{w}/rows.csv", "--output", "{w}/none/s.csv"],
     "the directory {w}/none does not exist"),
    ("predict-input-dir", ["predict", "--artifact", "{w}/model.shaver", "--input", "{w}/a_dir"],
     "a_dir: cannot read the input (Is a directory)"),
    ("predict-input-empty", ["predict", "--artifact", "{w}/model.shaver", "--input",
                             "{w}/raw-empty.csv"],
     "raw-empty.csv: empty file (expected a header with the raw column names)"),
    ("predict-input-wide-header", ["predict", "--artifact", "{w}/model.shaver", "--input",
                                   "{w}/rows-wide.csv"],
     "the header has: column0, column1, column2"),
    ("predict-ids-huge-cell", ["predict", "--artifact", "{w}/model.shaver", "--input",
                               "{w}/ids-huge.csv", "--ids"],
     "ids-huge.csv:1: ids must be integers, got ['0', '9x9x9x"),
    ("predict-no-input", ["predict", "--artifact", "{w}/model.shaver"],
     "the following arguments are required: --input"),
    # -- fleet (inputs that already behave; --out cases come with its redesign) --
    ("fleet-file-missing", ["fleet", "--run-dir", "{w}/run", "--fleet", "{w}/none.yaml",
                            "--out", "{w}/new"], "none.yaml: cannot read the fleet file"),
    ("fleet-empty", ["fleet", "--run-dir", "{w}/run", "--fleet", "{w}/fleet-empty.yaml",
                     "--out", "{w}/new"], "'classes' must be a non-empty list"),
    ("fleet-unknown", ["fleet", "--run-dir", "{w}/run", "--fleet", "{w}/fleet-unknown.yaml",
                       "--out", "{w}/new"], "unknown key 'extra'"),
    ("fleet-negative", ["fleet", "--run-dir", "{w}/run", "--fleet", "{w}/fleet-negative.yaml",
                        "--out", "{w}/new"], "a bytes budget must be > 0, got -5"),
    ("fleet-duplicate", ["fleet", "--run-dir", "{w}/run", "--fleet", "{w}/fleet-dup.yaml",
                         "--out", "{w}/new"], "duplicate class name 'a'"),
    ("fleet-values", ["fleet", "--run-dir", "{w}/run", "--fleet", "{w}/fleet-values.yaml",
                      "--out", "{w}/new"], "values must be one of fp32, fp16, int8, int4, int2, got 'int3'"),
    ("fleet-file-dir", ["fleet", "--run-dir", "{w}/run", "--fleet", "{w}/a_dir", "--out",
                        "{w}/new"], "a_dir: cannot read the fleet file (Is a directory)"),
    ("fleet-run-missing", ["fleet", "--run-dir", "{w}/none", "--fleet", "{w}/fleet.yaml",
                           "--out", "{w}/new"], "none: not a run directory (it does not exist)"),
    ("fleet-attribution-flipped", ["fleet", "--run-dir", "{w}/run", "--fleet",
                                   "{w}/fleet.yaml", "--attribution",
                                   "{w}/attr-flipped-phi.safetensors", "--out", "{w}/new"],
     "attr-flipped-phi.safetensors: checksum mismatch"),
    # -- report, bench, demo --
    ("report-missing", ["report", "{w}/none"],
     "none: no report document (run `shaver bench` first)"),
    ("report-bad-json", ["report", "{w}/report.json"], "report.json: corrupt JSON"),
    ("report-foreign-json", ["report", "{w}/report-foreign.json"],
     "report-foreign.json: format is 'other', expected "
     "'shaver-report'"),
    ("report-empty-dir", ["report", "{w}/a_dir"], "a_dir/report.json: no report document"),
    ("report-format", ["report", "{w}/a_dir", "--format", "gif"], "invalid choice: 'gif'"),
    ("bench-sparsity", ["bench", "--dataset", "movielens-100k", "--out", "{w}/new",
                        "--sparsity", "0.5,lots"], "expected comma-separated numbers"),
    ("bench-seeds", ["bench", "--dataset", "movielens-100k", "--out", "{w}/new", "--seeds",
                     "0,x"], "expected comma-separated integers"),
    ("bench-no-source", ["bench", "--out", "{w}/new"], "one of the arguments"),
    ("bench-fleet-missing", ["bench", "--fleet", "{w}/none.yaml", "--run-dir", "{w}/run",
                             "--out", "{w}/new"], "none.yaml: cannot read the fleet file"),
    ("demo-dataset", ["demo", "--dataset", "nope", "--out", "{w}/new"],
     "unknown dataset 'nope': expected one of movielens-100k, movielens-100k-genre-token, synthetic-criteo"),
    ("bench-data-missing", ["bench", "--data", "{w}/none", "--out", "{w}/new"],
     "none: not a prepared dataset directory (it does not exist)"),
    ("bench-out-file", ["bench", "--data", "{w}/ds", "--out", "{w}/a_file"],
     "a_file: is a file; --out names the benchmark's folder"),
    ("demo-rows", ["demo", "--rows", "many"], "argument --rows: invalid int value: 'many'"),
    ("demo-seed", ["demo", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
]


@pytest.mark.parametrize(("argv", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_with_one_line(world, capsys, argv, fragment):
    argv = [a.replace("{w}", str(world)) for a in argv]
    before = _listing(world)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses by exiting
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment.replace("{w}", str(world)) in err
    assert len(err) < 500 + len(str(world)) * 3, "an error line echoes too much"
    assert _listing(world) == before, "a refused command changed the stored files"


def test_the_corpus_is_large_and_covers_every_command():
    from shaver.cli import build_parser

    commands = {c[1][0] for c in CASES if c[1]}
    top = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert len(CASES) >= 120 and set(top) <= commands
    assert len({c[0] for c in CASES}) == len(CASES)


def test_shown_caps_every_echo():
    assert shown("abc") == "'abc'" and shown([1, (2,), {"k": None}]) == "[1, (2,), {'k': None}]"
    long = shown(list(range(10_000)))
    assert long == repr(list(range(10_000)))[:ECHO_LIMIT] + "..."
    nested: list = [1]
    for _ in range(200):  # 2**200 leaves: the repr is only built as far as the limit needs
        nested = [nested, nested]
    assert shown(nested).endswith("...") and len(shown(nested)) == ECHO_LIMIT + 3
    assert shown("x" * 10**7) == "'" + "x" * (ECHO_LIMIT - 1) + "..."


def test_load_yaml_bounds_alias_expansion_not_plain_size():
    plain = "rows:\n" + "".join(f"  - [{i}, {i}, {i}]\n" for i in range(3_000))
    assert len(load_yaml(plain, "p.yaml", SpecError)["rows"]) == 3_000  # 12,000 nodes: fine
    merged = "base: &b {x: 1, y: 2}\n" + "".join(f"k{i}: {{<<: *b, z: {i}}}\n"
                                                  for i in range(100))
    assert load_yaml(merged, "m.yaml", SpecError)["k99"] == {"x": 1, "y": 2, "z": 99}
    assert load_yaml("", "e.yaml", SpecError) is None
    with pytest.raises(SpecError, match=r"^b\.yaml: YAML aliases expand to over 10,000 nodes, "
                       rf"out of proportion to its {len(BOMB)} characters; refused$"):
        load_yaml(BOMB, "b.yaml", SpecError)


def test_inspect_reads_only_the_preamble_of_a_foreign_file(tmp_path, capsys):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:  # a sparse 1 GiB file: no disk, but reading it costs 1 GiB
        f.write(b"NOTSHAVER" + bytes(100))
        f.truncate(1 << 30)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    assert main(["inspect", str(big)]) == 2
    assert capsys.readouterr().err == f"error: {big}: not a shaver artifact (bad magic bytes)\n"
    assert main(["predict", "--artifact", str(big), "--input", str(big)]) == 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 256 * 1024


def test_attribution_checksum_round_trip_and_old_files(world, tmp_path, caplog):
    attr = Attribution.load(world / "attr-binned.safetensors")
    assert attr.path == world / "attr-binned.safetensors" and attr.bins is not None
    with safe_open(str(world / "attr-binned.safetensors"), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert meta["checksum"].startswith("sha256:") and len(meta["checksum"]) == 7 + 64
    del meta["checksum"]  # as written before the checksum existed
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=meta)
    with caplog.at_level("INFO", logger="shaver.attribution.result"):
        old = Attribution.load(tmp_path / "old.safetensors")
    assert torch.equal(old.bins, attr.bins)
    assert f"{tmp_path / 'old.safetensors'}: no checksum" in caplog.text
    assert zlib.crc32((world / "attr-flipped-bins.safetensors").read_bytes()) != \
        zlib.crc32((world / "attr-binned.safetensors").read_bytes())


@pytest.mark.parametrize("argv, engine, seed", [
    (["--update", "--data", "val", "--engine", "reference", "--seed", "0"], "reference", 0),
    (["--update", "--data", "val"], "fast", None),  # no --seed: the update's own default
    (["--refresh-from", "{w}/run", "--engine", "reference", "--seed", "0"], "reference", 0),
    (["--refresh-from", "{w}/run", "--batch-size", "7"], "fast", None),
])
def test_update_and_refresh_honour_engine_and_an_explicit_seed_0(world, tmp_path, monkeypatch,
                                                                 capsys, argv, engine, seed):
    """What reaches the update / refresh: --engine, and --seed 0 as given (not as absent)."""
    def spy(*args, **kwargs):
        raise AttributionError(f"engine={kwargs['engine']} seed={kwargs['seed']} "
                               f"batch={kwargs['batch_size']}")

    monkeypatch.setattr("shaver.attribution.update.update_attribution", spy)
    monkeypatch.setattr("shaver.attribution.refresh.refresh_attribution", spy)
    run = Path(shutil.copytree(world / "run", tmp_path / "run"))
    (run / "attribution-codebook.state.safetensors").write_bytes(b"")  # only its presence
    argv = [a.replace("{w}", str(world)) for a in argv]
    assert main(["attribute", "--run-dir", str(run), "-q", *argv]) == 2
    batch = 7 if "7" in argv else 1024
    assert capsys.readouterr().err == f"error: engine={engine} seed={seed} batch={batch}\n"
