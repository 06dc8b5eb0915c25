"""The fast engine: every step of many walks in one forward pass, same credits as the loop.

For a chunk of samples, all m*d + 1 states of each sample's walk are evaluated at once
(stacked into one big batch, chunked to ``max_rows`` head rows per pass). Where the model's
structure allows, a model-specific path (see :mod:`.paths`) updates the first layer
incrementally instead of recomputing it; it is validated against the generic path on the
first batch and dropped (with a log line) if they disagree.
"""

from __future__ import annotations

import logging

import torch

from shaver.attribution.estimator.common import bce, entry_credits, precision
from shaver.attribution.estimator.hardware import auto_candidates, bf16_native, cpu_summary
from shaver.attribution.estimator.mlp import int8_available
from shaver.attribution.estimator.paths import GenericPath, WalkPath, find_fast_path
from shaver.attribution.imputer import PlaceholderImputer
from shaver.errors import AttributionError

log = logging.getLogger(__name__)

#: int8 / bf16 are used only where their per-sample credits correlate this much with fp32's.
INT8_MIN_CORR = 0.9
BF16_MIN_CORR = 0.9


class FastEngine:
    """Stacked-coalition engine. dtype ``"bf16"`` runs the dense layers in bfloat16 autocast
    (incremental first-layer updates and the loss stay in float32); ``"int8"`` (CPU, models
    with a fast path) runs the MLP layers that see every state as int8 GEMMs (see
    :mod:`.mlp`); ``"auto"`` tries what the device offers (:mod:`.hardware`: bf16 where it is
    native, else int8 on CPUs) and keeps the first whose credits agree with fp32's on the
    first batch, else fp32. ``dtype_used`` is what runs; ``agreement`` the measured
    correlations."""

    name = "fast"

    def __init__(self, imputer: PlaceholderImputer, *, dtype: str = "fp32",
                 max_rows: int = 32768, path: WalkPath | None = None):
        self.imputer = imputer
        self.device = imputer.placeholder.device
        precision(dtype, self.device)  # validates dtype
        self.requested = dtype
        self.max_rows = max(1, int(max_rows))
        self.generic = GenericPath(imputer.model)
        self.path: WalkPath = path or find_fast_path(imputer.model) or self.generic
        self.int8_agreement: float | None = None
        self.agreement: dict[str, float] = {}
        self.dtype, self.candidates = self._plan(dtype)
        # the first batch checks the fast path and tries the low precisions
        self._validated = self.path is self.generic and not self.candidates

    @property
    def dtype_used(self) -> str:
        return self.dtype

    def _plan(self, dtype: str) -> tuple[str, list[str]]:
        """(precision to start with, low precisions to try on the first batch)."""
        if dtype == "auto":
            return "fp32", auto_candidates(self.device, hasattr(self.path, "to_int8"))
        if dtype == "int8":
            return "fp32", ["int8"] if self._check_int8() else []
        if dtype == "bf16" and not bf16_native(self.device):
            log.warning("dtype bf16: this %s has no native bf16 units (%s); bf16 is emulated "
                        "and slower than fp32 here", self.device.type, cpu_summary())
        return dtype, []

    def _check_int8(self) -> bool:
        if not int8_available(self.device):
            log.warning("dtype int8 runs on CPUs with torch's fbgemm/x86 quantized engine, "
                        "which this %s lacks; this run stays in fp32 (bf16 on GPUs)",
                        self.device.type)
            return False
        if not hasattr(self.path, "to_int8"):
            raise AttributionError(
                f"dtype int8 needs a model-specific fast path (DeepFM, FM, DCN-V2, DCN-Mix with "
                f"a Linear/BatchNorm/ReLU MLP); {type(self.imputer.model).__name__} uses the "
                f"generic path: use fp32")
        return True

    @property
    def path_name(self) -> str:
        return self.path.name

    def _validate(self, x, emb, base, perm, coef=None, w=None) -> None:
        self._validated = True
        take = min(16 if self.candidates else 4, x.shape[0])
        args = (x[:take], emb[:take], base[:take], perm[:take],
                *(None if t is None else t[:take] for t in (coef, w)))
        want = self.generic.walk_logits(*args)
        got = want if self.path is self.generic else self.path.walk_logits(*args)
        err = (want - got).abs() / (1.0 + want.abs())
        if not bool(torch.isfinite(err).all()) or float(err.max()) > 1e-3:
            if self.requested == "int8":
                raise AttributionError(
                    f"dtype int8: the fast path {self.path.name!r} disagrees with the model's "
                    f"head (max rel err {float(err.max()):.3g}); use fp32")
            log.warning("fast path %r disagrees with the model's head (max rel err %.3g); "
                        "using the generic path", self.path.name, float(err.max()))
            self.path = self.generic
            self.candidates = [c for c in self.candidates if c != "int8"]
            got = want
        for candidate in self.candidates:
            if (self._try_int8 if candidate == "int8" else self._try_bf16)(args, got):
                break
        else:
            if self.candidates:
                log.warning("dtype %s: no low precision agreed with fp32 on the first batch "
                            "(%s); this run stays in fp32", self.requested,
                            ", ".join(f"{k} {v:.3f}" for k, v in self.agreement.items()))

    def _agrees(self, name: str, fp32_logits: torch.Tensor, low_logits: torch.Tensor,
                perm: torch.Tensor, least: float) -> bool:
        players = self.imputer.num_players
        full, low = (entry_credits(logits.float(), perm, players).flatten().double()
                     for logits in (fp32_logits, low_logits))
        corr = float(torch.corrcoef(torch.stack([full, low]))[0, 1])
        self.agreement[name] = corr
        if corr >= least:
            return True
        log.warning("dtype %s: credits correlate only %.3f with fp32 on the first batch "
                    "(< %.2f): not used", name, corr, least)
        return False

    def _try_bf16(self, args, fp32_logits: torch.Tensor) -> bool:
        """Switch to bf16 autocast if its credits on ``args`` agree with fp32's."""
        with precision("bf16", self.device):
            low = self.path.walk_logits(*args)
        if self._agrees("bf16", fp32_logits, low, args[3], BF16_MIN_CORR):
            self.dtype = "bf16"
            return True
        return False

    def _try_int8(self, args, fp32_logits: torch.Tensor) -> bool:
        """Switch to the int8 path if its logit credits on ``args`` (up to 16 samples of the
        first batch) correlate with the fp32 path's at least ``INT8_MIN_CORR``."""
        low_path = self.path.to_int8()
        mlp = getattr(low_path, "mlp", None)
        if mlp is None or all(layer.packed is None for layer in mlp.layers):
            log.warning("dtype int8: %s has no MLP layer to run in int8; this run stays in fp32",
                        type(self.imputer.model).__name__)
            return False
        agreed = self._agrees("int8", fp32_logits, low_path.walk_logits(*args), args[3],
                              INT8_MIN_CORR)
        self.int8_agreement = self.agreement["int8"]
        if agreed:
            self.path, self.dtype = low_path, "int8"
        return agreed

    @torch.no_grad()
    def losses(self, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor,
               w: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, slots) global ids, y (B,), perm (B, K <= slots*d), w bag weights or None
        -> losses (B, K + 1) along the (truncated) walk."""
        batch, players = perm.shape
        emb, base, coef = self.imputer.embed(x, w)
        if not self._validated:
            self._validate(x, emb, base, perm, coef, w)
        chunk = max(1, self.max_rows // (players + 1))
        out = torch.empty(batch, players + 1, device=x.device)
        with precision(self.dtype, self.device):
            for lo in range(0, batch, chunk):
                hi = min(batch, lo + chunk)
                part = (None if t is None else t[lo:hi] for t in (coef, w))
                logits = self.path.walk_logits(x[lo:hi], emb[lo:hi], base[lo:hi], perm[lo:hi],
                                               *part)
                out[lo:hi] = bce(logits, y[lo:hi, None])
        return out
