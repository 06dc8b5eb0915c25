"""When to stop walking: the paper's SAGE rule, or the rule pruning needs (a stable cut).

Two rules, both checked only after ``min_passes`` passes over D (default 0 for the cut
rule, which then judges by evidence alone; 1 for SAGE's, as in the paper):

* ``"sage"`` (the paper's, METHOD.md section 3): ``max(stderr) / (max(phi) - min(phi)) <
  tolerance``. The maximum standard error is set by the rarest rows, so on real data it can
  need tens of passes, although those rows are nowhere near any cut.
* ``"cut"`` (the default): what decides a pruned model is which entries each cut keeps.
  For each requested budget (a sparsity s: the K = round((1-s)*N) entries of largest |phi|
  of N are kept) the rule asks how much of the kept Shapley value sampling noise could cost:
  draw plausible values ``phi* = phi + stderr * eps`` (eps standard normal), cut by |phi*|,
  and measure, with the current estimates as the truth, the share of the kept value
  ``sum_{top K} |phi|`` that this cut loses (its *regret*). Stop once the mean regret over
  ``draws`` draws is below ``fraction`` at every budget.

Why value, not a count: the issue's first form of this rule counted the entries whose side of
the cut is uncertain (``| |phi| - tau | < z * stderr``). On MovieLens-100k DeepFM after 1.5
passes that count is 80-200 % of the kept set at every budget (z = 1-2), and it shrinks only
as 1/sqrt(samples): it would need some 10^4 times more walks. Most of those entries sit next
to the threshold with nearly equal values, so swapping them costs almost nothing; the regret
(2-5 % there) weighs each swap by what it costs, and a few rare rows with huge standard
errors but tiny |phi| (phi is frequency-weighted) cost a tiny share. The count is still
reported (``uncertain``, per budget, z = 2) beside the regret.

Which standard errors: the cut rule may stop long before a pass, so it counts every source
of error, not only the spread of the walks seen so far: walk noise, the sampled surrogate's
error and the rows of D that no walk has reached yet (:mod:`shaver.attribution.evidence`:
an entry whose id no walked row contained is not "known to be 0" but as uncertain as its
field's credits are at its frequency). ``error`` gives those; without it the rule uses the
accumulator's own standard errors.

The draws are seeded, so a check is a function of the state. Budgets that keep no entry
(s = 1) or every entry (s = 0) have no cut and are skipped; when no budget is left the rule
cannot fire, and :class:`CutStability` says so when it is built (before any walk).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from shaver.attribution.accumulator import Accumulator
from shaver.errors import AttributionError

log = logging.getLogger(__name__)

STOP_RULES: tuple[str, ...] = ("cut", "sage")
#: The sparsity grid of ``shaver bench`` / the report: the default budgets of the cut rule.
DEFAULT_STOP_BUDGETS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
#: Stop when sampling noise could cost less than this share of the kept |phi| at every budget.
DEFAULT_STOP_FRACTION = 0.05
DEFAULT_STOP_DRAWS = 4
#: The cut rule checks at samples n, then no earlier than n * (1 + this).
CHECK_GROWTH = 0.125
#: Passes over D before a rule may stop: none for the cut rule (its errors count the rows not
#: yet walked), one for SAGE's (the paper's rule, unchanged).
DEFAULT_MIN_PASSES = {"cut": 0.0, "sage": 1.0}
#: Below this a SAGE tolerance cannot be told apart from rounding in float64 sums.
FLOAT64_TOLERANCE_FLOOR = 1e-12


@dataclass
class CutCheck:
    """The cut rule's verdict: ``stable``; per budget (sparsity) the mean ``regret`` (share of
    the kept |phi| that noise could cost) and the ``uncertain`` share of the kept entries."""

    stable: bool
    regret: dict[float, float] = field(default_factory=dict)
    uncertain: dict[float, float] = field(default_factory=dict)

    def worst(self) -> tuple[float, float]:
        """(sparsity, regret) of the budget furthest from stable; (nan, 0) if none."""
        if not self.regret:
            return math.nan, 0.0
        s = max(self.regret, key=lambda k: self.regret[k])
        return s, self.regret[s]

    def to_json(self) -> dict[str, dict[str, float]]:
        return {"regret": {f"{k:g}": v for k, v in self.regret.items()},
                "uncertain": {f"{k:g}": v for k, v in self.uncertain.items()}}


class CutStability:
    """The ``"cut"`` rule over ``total`` entries (see the module docstring).

    A check sorts the N scores ``draws + 1`` times, so checks follow a geometric schedule in
    samples, not in seconds: after a check at n samples the next comes at n * (1 +
    ``CHECK_GROWTH``) at the earliest. The rule therefore stops at the same sample whatever
    the machine's speed (same seed and data, same result), overshoots its stable point by at
    most that share, and checks O(log n) times.
    """

    def __init__(self, total: int, budgets: Sequence[float] = DEFAULT_STOP_BUDGETS, *,
                 fraction: float = DEFAULT_STOP_FRACTION, draws: int = DEFAULT_STOP_DRAWS,
                 error: Callable[[Accumulator], torch.Tensor] | None = None):
        self.total = int(total)
        self.error = error
        self.fraction, self.draws = float(fraction), int(draws)
        self.kept = kept_counts(self.total, budgets)
        self.active = active_budgets(self.total, budgets)
        self._next_at = 0.0  # samples
        self.last: CutCheck | None = None
        if not self.active:
            log.warning("stop budgets %s keep no entry or every entry of this %d-entry table: "
                        "there is no cut to stabilise, so the cut rule cannot fire; the run "
                        "stops only at max_samples / max_seconds",
                        ",".join(f"{s:g}" for s in self.kept), self.total)

    @property
    def can_fire(self) -> bool:
        return bool(self.active)

    def check(self, acc: Accumulator, *, force: bool = False) -> CutCheck | None:
        """The verdict on ``acc`` now, or None before its turn (``force``: now anyway)."""
        if not force and acc.count < self._next_at:
            return None
        err = acc.stderr() if self.error is None else self.error(acc)
        self.last = cut_regret(acc.phi(), err, self.active, fraction=self.fraction,
                               draws=self.draws)
        self._next_at = acc.count * (1.0 + CHECK_GROWTH)
        return self.last

    def status(self) -> str:
        """Short progress text: what the rule is waiting for."""
        if self.last is None:
            return "cut: waiting for the first check"
        s, regret = self.last.worst()
        return f"cut s={s:g}: regret {regret:.2%} (< {self.fraction:.2%})"


def kept_counts(total: int, budgets: Sequence[float]) -> dict[float, int]:
    """Sparsity s -> entries the cut at s keeps (round((1 - s) * total))."""
    return {float(s): int(total) - int(round(float(s) * total)) for s in budgets}


def active_budgets(total: int, budgets: Sequence[float]) -> dict[float, int]:
    """:func:`kept_counts` without the budgets that keep nothing or everything (no cut)."""
    return {s: k for s, k in kept_counts(total, budgets).items() if 0 < k < int(total)}


def cut_regret(phi: torch.Tensor, stderr: torch.Tensor, kept: dict[float, int], *,
               fraction: float, draws: int = DEFAULT_STOP_DRAWS, z: float = 2.0,
               seed: int = 0) -> CutCheck:
    """phi, stderr (N,) -> per sparsity s keeping K = ``kept[s]`` entries: the mean regret
    of cutting by ``|phi + stderr * eps|`` (share of ``sum_{top K} |phi|`` lost), over
    ``draws`` seeded draws; stable when every regret is below ``fraction``. Also the share
    of K within ``z`` standard errors of the K-th largest |phi| (reported, not decisive)."""
    key = phi.abs().to(torch.float64)
    err = stderr.to(torch.float64)
    ordered = torch.sort(key, descending=True).values
    best = torch.cumsum(ordered, 0)
    gen = torch.Generator(device=key.device).manual_seed(seed)
    lost = {s: 0.0 for s in kept}
    for _ in range(draws):
        noise = torch.randn(key.shape, generator=gen, dtype=key.dtype, device=key.device)
        pick = torch.sort((phi + err * noise).abs(), descending=True).indices
        got = torch.cumsum(key[pick], 0)
        for s, k in kept.items():
            lost[s] += float((best[k - 1] - got[k - 1]) / best[k - 1].clamp_min(1e-300))
    regret = {s: v / max(draws, 1) for s, v in lost.items()}
    uncertain = {s: int(((key - ordered[k - 1]).abs() < z * err).sum()) / k
                 for s, k in kept.items()}
    return CutCheck(all(v < fraction for v in regret.values()), regret, uncertain)


def check_stop_options(stop: str, tolerance: float | None, budgets: Sequence[float],
                       fraction: float, draws: int) -> None:
    """Refuse impossible stop settings; warn early about rules that cannot fire."""
    if stop not in STOP_RULES:
        raise AttributionError(f"stop must be one of {', '.join(STOP_RULES)}, got {stop!r}")
    if stop == "sage" and tolerance is not None and tolerance < FLOAT64_TOLERANCE_FLOOR:
        log.warning("tolerance %g is below what float64 sums resolve (%g): the SAGE rule will "
                    "not fire; the run stops only at max_samples / max_seconds", tolerance,
                    FLOAT64_TOLERANCE_FLOOR)
    if stop != "cut":
        return
    for s in budgets:
        if not 0 <= float(s) <= 1:
            raise AttributionError(f"stop budgets are sparsities in [0, 1], got {s!r}")
    if not 0 < fraction < 1:
        raise AttributionError(f"stop fraction must be in (0, 1), got {fraction!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise AttributionError(f"stop draws must be an integer >= 1, got {draws!r}")
