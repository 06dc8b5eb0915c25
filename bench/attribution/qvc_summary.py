"""Quality against compute over seeds: the issue-15 targets, as a markdown table.

Reads the ``qvc.json`` of several runs of ``quality_vs_compute.py`` (one per seed, same
dataset and model) and prints, per option and compute cap (in training epochs of its own
run), the mean test AUC at each sparsity with its spread over seeds (min-max), after the
paper's cut and after the default cut (auto) where measured; then the two targets:

* one epoch: the default (option ``default``, default cut) at least Taylor and magnitude;
* three epochs: the default within 0.002 of the long attribution (the same cut of it).

    .venv/bin/python bench/attribution/qvc_summary.py runs/qvc-ml-s0 runs/qvc-ml-s1 runs/qvc-ml-s2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def load(folders: list[Path]) -> list[dict]:
    records = [{**json.loads((f / "qvc.json").read_text()), "folder": f.name} for f in folders]
    kinds = {(r["dataset"], r["model"]) for r in records}
    if len(kinds) != 1:
        raise SystemExit(f"records of different datasets/models: {sorted(kinds)}")
    return records


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})"


def at_cap(record: dict, option: str, index: int) -> dict | None:
    points = [p for p in record["points"] if p["option"] == option]
    return points[index] if index < len(points) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="folders holding qvc.json")
    ap.add_argument("--default", default="default", help="the option that is the default")
    ap.add_argument("--caps", default=None, metavar="E,E,...",
                    help="only these caps (in epochs) in the table (default: all)")
    args = ap.parse_args()
    records = load(args.folders)
    first = records[0]
    sparsity = first["sparsity"]
    epochs = [c / first["epoch_seconds"] for c in first["caps"]]
    print(f"{first['dataset']} {first['model']}, {len(records)} seed(s); one epoch "
          f"{cell([r['epoch_seconds'] for r in records])} s; {first['cpu']}\n")
    head = " | ".join(f"AUC {s:g}" for s in sparsity)
    print(f"| option | cap (epochs) | epochs spent | cut | {head} |")
    print("|---|---|---|---|" + "---|" * len(sparsity))
    for ref in ("taylor", "magnitude"):
        print(f"| {ref} | | | its own | "
              + " | ".join(cell([r[ref]["auc"][k] for r in records])
                           for k in range(len(sparsity))) + " |")
    for key, cut in (("auc", "paper"), ("auc_auto", "auto")):
        if all(key in r["converged"] for r in records):
            print(f"| long attribution | | | {cut} | "
                  + " | ".join(cell([r["converged"][key][k] for r in records])
                               for k in range(len(sparsity))) + " |")
    options = list(dict.fromkeys(p["option"] for p in first["points"]))
    for option in options:
        for index, cap in enumerate(epochs):
            if args.caps and not any(abs(cap - float(c)) < 1e-6 for c in args.caps.split(",")):
                continue
            points = [(r, at_cap(r, option, index)) for r in records]
            points = [(r, p) for r, p in points if p is not None]
            spent = cell([p["seconds"] / r["epoch_seconds"] for r, p in points])
            for key, cut in (("auc", "paper"), ("auc_auto", "auto")):
                if not all(key in p for _, p in points):
                    continue
                print(f"| {option} | {cap:g} | {spent} | {cut} | "
                      + " | ".join(cell([p[key][k] for _, p in points])
                                   for k in range(len(sparsity))) + " |")
    print()
    targets(records, args.default, sparsity, epochs)


def targets(records: list[dict], option: str, sparsity: list[float], epochs: list[float]
            ) -> None:
    """The two targets, per seed and sparsity (on the default cut where measured)."""
    def index_of(e: float) -> int | None:
        return next((i for i, c in enumerate(epochs) if abs(c - e) < 1e-6), None)

    one, three = index_of(1.0), index_of(3.0)
    for r in records:
        seed = r.get("seed", r["folder"])
        if one is not None and (p := at_cap(r, option, one)) is not None:
            key = "auc_auto" if "auc_auto" in p else "auc"
            rows = []
            for k, s in enumerate(sparsity):
                floor = max(r["taylor"]["auc"][k], r["magnitude"]["auc"][k])
                rows.append(f"{s:g}: {p[key][k] - floor:+.4f}")
            print(f"{seed}: one epoch ({key}), default minus max(Taylor, magnitude): "
                  + ", ".join(rows))
        if three is not None and (p := at_cap(r, option, three)) is not None:
            for key in ("auc", "auc_auto"):
                if key in p and key in r["converged"]:
                    gaps = [f"{s:g}: {p[key][k] - r['converged'][key][k]:+.4f}"
                            for k, s in enumerate(sparsity)]
                    print(f"{seed}: three epochs ({key}), default minus the long "
                          f"attribution: " + ", ".join(gaps))


if __name__ == "__main__":
    main()
