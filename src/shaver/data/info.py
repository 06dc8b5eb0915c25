"""A readable summary of a prepared dataset (``shaver data info``)."""

from __future__ import annotations

from shaver.data.store import SPLITS, PreparedDataset


def describe(ds: PreparedDataset, max_fields: int = 60) -> str:
    """Multi-line text: path, fingerprint, rows and positive rate per split, fields."""
    meta = ds.meta
    spec = meta.get("spec") or {}
    lines = [
        f"{ds.path}  ({spec.get('name', '?')}, fingerprint {ds.fingerprint}, "
        f"shaver {meta.get('library_version', '?')})",
        "rows: " + ", ".join(
            f"{s} {meta['rows'][s]:,}" + (f" ({meta['positive_rate'][s]:.1%} positive)"
                                          if meta["positive_rate"][s] is not None else "")
            for s in SPLITS),
        f"features: {ds.num_features:,} in {ds.num_fields} fields "
        f"(each field's local id 0 is its OOV id)",
    ]
    if meta.get("skipped_lines"):
        lines.append(f"skipped bad lines: {meta['skipped_lines']:,}")
    freq = ds.frequencies
    offsets = ds.offsets
    bags = ds.layout.bag_of
    train_rows = max(int(meta["rows"]["train"]), 1)
    lines.append(f"{'field':<16}{'values':>10}{'train OOV share':>18}"
                 + ("  list (pooling, max_len, ids a train row)" if bags else ""))
    for k, (name, dim) in enumerate(zip(ds.field_names, ds.field_dims)):
        if k == max_fields:
            lines.append(f"... {ds.num_fields - max_fields} more fields")
            break
        total = int(freq[offsets[k]:offsets[k] + dim].sum())
        oov = int(freq[offsets[k]]) / total if total else 0.0
        line = f"{name:<16}{dim:>10,}{oov:>18.1%}"
        if k in bags:
            b = bags[k]
            line += (f"  {b.pooling}{', weighted' if b.weighted else ''}, <= {b.max_len}, "
                     f"{total / train_rows:.2f}")
        lines.append(line)
    return "\n".join(lines)
