"""Render quality_grid.py's grid.json as the markdown tables of bench/pruning/README.md.

    .venv/bin/python bench/pruning/grid_tables.py runs/quality-grid/grid.json [more.json ...]

Per model: the base row (test AUC / LogLoss, attribution samples and convergence), method x
sparsity cells "AUC / LogLoss", auto's winning candidates, the target check (auto against the
best baseline), the artifact bytes of shaver-cb/abs/fixed, and the PTQ rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: The baselines of the target: auto >= best of these (and the floor) - 0.002 everywhere.
BASELINES = ("shaver-cb/abs/fixed", "magnitude/abs/fixed", "random/abs/fixed",
             "taylor/abs/fixed")


def model_tables(rows: list[dict]) -> str:
    """Markdown for the rows of one model (rows[0] is its base row)."""
    base = rows[0]
    out = [f"### {base['model']} (base: AUC {base['auc']:.4f}, LogLoss {base['logloss']:.4f})", ""]
    for placeholder, a in base.get("attribution", {}).items():
        ratio = a.get("convergence_ratio")
        out.append(f"* attribution ({placeholder}): {a['count']} samples in "
                   f"{a['seconds']:.0f} s, {a.get('passes', 0):.3f} passes, stopped by "
                   f"{a.get('stop_reason')}, convergence ratio "
                   f"{'-' if ratio is None else f'{ratio:.3f}'}")
    pruned = [r for r in rows if r["sparsity"] not in (None, 0.0)]
    sparsities = sorted({r["sparsity"] for r in pruned})
    out += ["", "| method | " + " | ".join(f"{s:g}" for s in sparsities) + " |",
            "| --- |" + " --- |" * len(sparsities)]
    for method in dict.fromkeys(r["method"] for r in pruned):
        cells = {r["sparsity"]: r for r in pruned if r["method"] == method}
        out.append(f"| {method} | " + " | ".join(
            f"{cells[s]['auc']:.4f} / {cells[s]['logloss']:.4f}" if s in cells else "-"
            for s in sparsities) + " |")
    winners = {r["sparsity"]: r.get("winner") for r in pruned if r["method"] == "auto"}
    if winners:
        out.append("| auto's winner (on validation) | "
                   + " | ".join(str(winners.get(s) or "-") for s in sparsities) + " |")
    sizes = {r["sparsity"]: r["bytes"] for r in pruned if r["method"] == "shaver-cb/abs/fixed"}
    out.append("| artifact bytes (shaver-cb/abs) | "
               + " | ".join(str(sizes.get(s, "-")) for s in sparsities) + " |")
    targets = target_lines(rows)
    if targets:
        out += [""] + [f"* {line}" for line in targets]
    ptq = [r for r in rows if r["method"].startswith("ptq/")]
    if ptq:
        out += ["", "| PTQ | bytes | AUC | LogLoss |", "| --- | --- | --- | --- |"]
        out += [f"| {r['method'][4:]} | {r['bytes']} | {r['auc']:.4f} | {r['logloss']:.4f} |"
                for r in ptq]
    return "\n".join(out) + "\n"


def target_lines(rows: list[dict]) -> list[str]:
    """Per sparsity: auto's test AUC against the best baseline (paper's Shaver, magnitude,
    random, Taylor, and the all-pruned floor = any method at sparsity 1.0) and the paper's."""
    cells = {(r["method"], r["sparsity"]): r["auc"] for r in rows if r.get("sparsity")}
    losses = {(r["method"], r["sparsity"]): r["logloss"] for r in rows if r.get("sparsity")}
    floor = max((auc for (m, s), auc in cells.items() if s == 1.0 and m != "auto"),
                default=float("nan"))
    out = []
    for (method, s), auc in sorted(cells.items(), key=lambda kv: kv[0][1]):
        if method != "auto":
            continue
        base = {m: cells[(m, s)] for m in BASELINES if (m, s) in cells}
        best_name, best = max([*base.items(), ("floor", floor)], key=lambda kv: kv[1])
        paper = base.get("shaver-cb/abs/fixed", float("nan"))
        loss, paper_loss = losses[(method, s)], losses.get(("shaver-cb/abs/fixed", s))
        vs_loss = "" if paper_loss is None else (
            f"; LogLoss {loss:.4f} vs paper {paper_loss:.4f} "
            f"({'at or below' if loss <= paper_loss else 'ABOVE'})")
        out.append(f"target {s:g}: auto {auc:.4f} vs best baseline {best_name} {best:.4f} "
                   f"({auc - best:+.4f}; {'met' if auc >= best - 0.002 else 'MISSED'}), "
                   f"vs paper {auc - paper:+.4f}{vs_loss}")
    return out



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("grids", type=Path, nargs="+", help="grid.json files from quality_grid.py")
    args = ap.parse_args()
    for path in args.grids:
        rows = json.loads(path.read_text())
        for model in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == model]
            data = mine[0].get("data")
            if data:
                print(f"<!-- {path}: {data} -->")
            print(model_tables(mine))


if __name__ == "__main__":
    main()
