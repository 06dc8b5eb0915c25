"""``shaver export``, ``shaver inspect``, ``shaver predict``: thin wrappers over the deploy API."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from shaver.data.encode import RowValueError
from shaver.deploy.fleet_cli import register_fleet
from shaver.errors import ArtifactError, DataError
from shaver.fileio import check_output_file
from shaver.table.plan import VALUE_CHOICES

PREDICT_BATCH = 4096  # rows scored at once by `shaver predict` (bounds its memory)
KIND_LABELS = {"values": "values", "index": "index", "scales": "scales", "codebook": "codebook",
               "first_order": "first-order", "head": "head", "metadata": "metadata"}


def register(sub: Any) -> None:
    """Add the deployment subcommands to the ``shaver`` parser."""
    p = sub.add_parser("export", help="write a pruned model as a compact artifact or ONNX",
                       description="Export a pruned directory (or an artifact, for ONNX) to "
                       "a shaver artifact or an ONNX graph.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pruned", metavar="DIR", help="pruned directory (shaver prune)")
    src.add_argument("--artifact", metavar="FILE",
                     help="existing artifact (for --format onnx or executorch)")
    p.add_argument("--format", choices=("shaver", "onnx", "executorch"), default="shaver",
                   help="shaver artifact (default), ONNX graph, or ExecuTorch .pte program "
                   "(needs the optional executorch package)")
    p.add_argument("--dtype", choices=VALUE_CHOICES, default=None, metavar="DTYPE",
                   help="a cut of shaver prune is written with its own plan's precisions "
                   "(prune with --values / --head for others; a different --dtype is refused). "
                   "For a pruned directory without a plan: fp32 (default), fp16, int8 "
                   "(format v1), int4 / int2 (packed, format v2), with /field or /row scales")
    p.add_argument("--head", choices=("fp32", "fp16", "int8"), default=None,
                   help="storage of the dense head: the cut's own (a different one is "
                   "refused); for a directory without a plan fp32 (default), fp16 or int8 "
                   "(per-output-channel scales; format v2)")
    p.add_argument("--out", metavar="FILE", help="output file (default: DIR/model.shaver, "
                   "DIR/model.onnx or DIR/model.pte)")
    p.add_argument("--no-feature-map", action="store_true",
                   help="leave the vocabularies out (the artifact then predicts from ids only)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("inspect", help="print an artifact's byte breakdown",
                       description="Validate an artifact and print its bytes per part.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("predict", help="score rows with an artifact (numpy runtime)",
                       description="Predict click probabilities for raw rows, read by default "
                       "in the format the model's data was prepared from (the artifact's "
                       "feature map records it: for the criteo preset, tab-separated values "
                       "without a header, with or without the label column), or as a CSV "
                       "whose header names every raw column the model reads (--input-format "
                       "csv; extra columns are ignored). An empty value is a missing value.")
    p.add_argument("--artifact", required=True, metavar="FILE")
    p.add_argument("--input", required=True, metavar="FILE",
                   help="raw rows (or a CSV of global ids with --ids); .gz and the other "
                   "compressions preparation reads are decompressed")
    p.add_argument("--input-format", choices=("data", "csv"), default=None,
                   help="data (default): the delimiter, header and columns of the files the "
                   "model's data was prepared from; csv: comma-separated with a header of "
                   "raw column names")
    p.add_argument("--ids", action="store_true",
                   help="the CSV holds global ids, one per field (a model with list fields: "
                   "one per slot, each list's ids then -1 up to its max_len; not for "
                   "weighted lists)")
    p.add_argument("--allow-missing", action="store_true",
                   help="score rows that lack some of the model's columns (their values count "
                   "as missing); by default such input is refused")
    p.add_argument("--output", metavar="CSV", help="write scores here (default: stdout)")
    p.set_defaults(func=cmd_predict)
    register_fleet(sub)


def cmd_export(args: argparse.Namespace) -> int:
    from shaver.deploy.artifact import export_artifact

    base = Path(args.pruned or Path(args.artifact).parent)
    suffix = {"shaver": "shaver", "onnx": "onnx", "executorch": "pte"}[args.format]
    out = Path(args.out) if args.out else base / f"model.{suffix}"
    if args.out:  # before any work; a default beside the source is checked with the source
        check_output_file(out, ArtifactError)
    if args.format == "shaver":
        if not args.pruned:
            raise ArtifactError("--format shaver exports a pruned directory: pass --pruned DIR")
        result = export_artifact(args.pruned, out, value_dtype=args.dtype,
                                 include_feature_map=not args.no_feature_map,
                                 head_dtype=args.head)
        print(f"wrote {result.path} ({result.bytes:,} bytes)")
        budgeted = result.info.get("artifact_bytes")
        if isinstance(budgeted, int) and budgeted != result.bytes:
            print(f"note: pruned.json counted {budgeted:,} bytes for this model; the file "
                  f"differs by {result.bytes - budgeted:+,} bytes (feature map, value dtype)")
        _print_breakdown(result.breakdown, result.bytes)
        return 0
    if args.format == "onnx":
        from shaver.deploy.onnx_export import export_onnx as exporter
        checked = "onnxruntime"
    else:
        from shaver.deploy.executorch_export import export_executorch as exporter
        checked = "the ExecuTorch runtime"
    if args.artifact:
        path = exporter(args.artifact, out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            art = export_artifact(args.pruned, Path(tmp) / "model.shaver", value_dtype=args.dtype,
                                  include_feature_map=False, head_dtype=args.head)
            path = exporter(art.path, out)
    print(f"wrote {path} ({path.stat().st_size:,} bytes; checked with {checked})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from shaver.runtime import load_artifact

    art = load_artifact(args.file)
    parts = art.breakdown()
    if args.json:
        print(json.dumps({"bytes": art.size, "table_bytes": art.table_bytes(),
                          "format_version": art.version, "breakdown": parts,
                          "model": art.config, "value_dtype": art.value_dtype,
                          "head_dtype": art.head_dtype, "layouts": art.layouts,
                          "calibration": None if art.calibration is None else
                          dict(zip(("scale", "bias"), map(float, art.calibration))),
                          "info": art.info}, indent=2, sort_keys=True))
        return 0
    rows = sum(art.field_dims)
    print(f"{args.file}: shaver artifact v{art.version}, model {art.config.get('name')}, "
          f"{rows:,} rows x {art.dim}, {len(art.field_dims)} fields, values "
          f"{art.value_dtype}, head {art.head_dtype}")
    if art.calibration is not None:
        scale, bias = (float(v) for v in art.calibration)
        print(f"calibration: probability = sigmoid({scale:.6g} * logit {bias:+.6g})")
    counts = {lay: art.layouts.count(lay) for lay in dict.fromkeys(art.layouts)}
    print("layouts: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    kept = art.tables.kept
    print(f"stored entries: {kept:,} of {rows * art.dim:,}; index {parts['index'] / rows:.3f} "
          f"bytes/row")
    _print_breakdown(parts, art.size)
    table = art.table_bytes()
    fp32 = rows * art.dim * 4
    print(f"  table (values + index + scales + codebook): {table:,} bytes = "
          f"{table / fp32:.4f} of the fp32 table ({fp32:,})")
    fmap = next((e[5] for e in art.container.table if e[0] == "feature_map"), 0)
    if fmap:
        print(f"  (metadata includes a feature map of {fmap:,} bytes: vocabularies for raw rows)")
    budget = art.info.get("budget")
    if budget:
        print(f"budget: {budget.get('label', budget)}; metrics: {art.info.get('metrics', {})}")
    return 0


def _print_breakdown(parts: dict[str, int], total: int) -> None:
    for kind, nbytes in parts.items():
        print(f"  {KIND_LABELS[kind]:<12} {nbytes:>14,}  {100 * nbytes / max(total, 1):5.1f}%")
    print(f"  {'total':<12} {total:>14,}")


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from shaver.runtime import load_artifact
    from shaver.runtime.csvio import CSV_WITH_HEADER, read_id_rows, read_raw_file, write_scores

    if args.ids and args.input_format:
        raise DataError("--input-format reads raw rows; --ids reads a CSV of global ids: pass "
                        "one of them")
    if args.output:
        check_output_file(args.output, DataError)
    art = load_artifact(args.artifact)
    weights = None
    if args.ids:
        if art.layout.weighted:
            raise DataError(f"--ids gives no weights, and this model's lists carry weights "
                            f"({art.layout.describe(art.field_names)}): pass raw rows")
        ids = read_id_rows(args.input, art.layout.num_slots)
        try:
            art.check_ids(ids)
        except DataError as exc:
            raise DataError(f"{args.input}: {exc}") from None
    else:
        fmt = CSV_WITH_HEADER if args.input_format == "csv" else art.row_format
        table = read_raw_file(args.input, art.raw_columns, allow_missing=args.allow_missing,
                              fmt=fmt)
        ids, weights = _encoded(art, table, args.input, args.allow_missing)
    scores = np.concatenate([
        art.predict(ids[i:i + PREDICT_BATCH],
                    None if weights is None else weights[i:i + PREDICT_BATCH])
        for i in range(0, len(ids), PREDICT_BATCH)] or [np.zeros(0)])
    text = write_scores(args.output, scores)
    if args.output:
        print(f"wrote {len(scores)} scores to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def _encoded(art: Any, table: Any, path: str, allow_missing: bool) -> tuple[Any, Any]:
    """(int64 (rows, slots) global ids, float32 (rows, slots) bag weights or None) of
    ``table`` (:class:`RawRows`), a batch at a time; a value the feature map cannot read is
    an error naming its line in ``path``."""
    import numpy as np

    xs, ws = [np.zeros((0, art.layout.num_slots), np.int64)], []
    for start in range(0, len(table.rows), PREDICT_BATCH):
        try:
            x, w = art.encode_slots(table.rows[start:start + PREDICT_BATCH],
                                    allow_missing=allow_missing)
        except RowValueError as exc:
            raise DataError(f"{path}:{table.lines[start + exc.row]}: {exc.detail}") from None
        xs.append(x)
        ws.append(w)
    weighted = bool(ws) and all(w is not None for w in ws)
    return np.concatenate(xs), np.concatenate(ws) if weighted else None
