"""Torch-free runtime for shaver artifacts: ``load_artifact(path).predict(ids)``.

Needs numpy only; ``import shaver.runtime`` never imports torch. Raw rows are encoded with
the artifact's feature map through :class:`shaver.data.encode.RowEncoder` (also torch-free).

    art = load_artifact("model.shaver")      # validates magic, version, checksums, indexes
    art.predict(ids)                         # int (batch, fields) global ids -> (batch,)
    art.predict(x, w)                        # with bags: (batch, slots) ids padded with -1,
                                             # bag value weights (batch, slots) or None
    art.raw_columns                          # the raw columns a row must carry
    art.predict_rows(rows)                   # raw values; unseen -> the field's OOV id
    art.encode_slots(rows)                   # raw rows -> (x (batch, slots), w or None)
    art.predict_rows([{"C1": "68fd1e64"}], allow_missing=True)  # absent columns = missing
    art.breakdown()                          # bytes per part

Latency tip: for one request at a time, limit BLAS to one thread (``OPENBLAS_NUM_THREADS=1``
before numpy is imported); busy-waiting BLAS threads on a shared machine cost far more than
the matrix products of a CTR head.
"""

from __future__ import annotations

from shaver.runtime.model import Artifact, load_artifact

__all__ = ["Artifact", "load_artifact"]
