"""The field-aware codebook (METHOD.md section 4): one placeholder vector per field."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from shaver.errors import AttributionError


def field_codebook(
    weight: torch.Tensor,
    field_dims: Sequence[int],
    frequencies: np.ndarray | torch.Tensor,
) -> torch.Tensor:
    """Frequency-weighted per-field mean of the embedding rows.

    weight: (n, d) embedding table; field_dims: rows per field (sum = n); frequencies: (n,)
    occurrences of each row on the attribution data. Returns float32 (m, d) with
    ``C[f] = sum_r freq[r] E[r] / sum_r freq[r]`` over the rows r of field f, the closed-form
    minimiser of the expected squared distortion. A field whose rows were never seen gets the
    plain mean of its rows.
    """
    dims = [int(v) for v in field_dims]
    table = weight.detach().to("cpu", torch.float64)
    if table.dim() != 2 or sum(dims) != table.shape[0] or any(v <= 0 for v in dims):
        raise AttributionError(
            f"field_dims {dims} (sum {sum(dims)}) do not match the embedding table of shape "
            f"{tuple(table.shape)}")
    freq = torch.as_tensor(np.asarray(frequencies), dtype=torch.float64).reshape(-1)
    if freq.shape[0] != table.shape[0]:
        raise AttributionError(
            f"frequencies has {freq.shape[0]} entries, but the embedding table has "
            f"{table.shape[0]} rows")
    if bool((freq < 0).any()):
        raise AttributionError("frequencies must be non-negative counts")
    row_field = torch.repeat_interleave(torch.arange(len(dims)), torch.tensor(dims))
    m, d = len(dims), table.shape[1]
    weighted = torch.zeros(m, d, dtype=torch.float64).index_add_(0, row_field, table * freq[:, None])
    totals = torch.zeros(m, dtype=torch.float64).index_add_(0, row_field, freq)
    plain = torch.zeros(m, d, dtype=torch.float64).index_add_(0, row_field, table)
    plain /= torch.tensor(dims, dtype=torch.float64)[:, None]
    seen = totals > 0
    book = torch.where(seen[:, None], weighted / totals.clamp_min(1e-300)[:, None], plain)
    return book.to(torch.float32)


def zero_codebook(num_fields: int, embed_dim: int) -> torch.Tensor:
    """The "zero" variant's placeholder: float32 zeros (m, d)."""
    return torch.zeros(int(num_fields), int(embed_dim), dtype=torch.float32)
