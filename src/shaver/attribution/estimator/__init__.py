"""Permutation estimators of per-sample Shapley credits: a reference loop and a fast engine.

Both answer one question: for a batch ``x`` (batch, m), labels ``y`` (batch,) and
permutations ``perm`` (batch, m*d), the per-sample BCE loss of every state of the walk
(``losses`` (batch, m*d + 1): state t has the first t permuted entries replaced). The credits
then follow from :func:`shaver.attribution.estimator.common.entry_credits`.
"""

from shaver.attribution.estimator.common import DTYPES, entry_credits
from shaver.attribution.estimator.factory import make_engine

__all__ = ["DTYPES", "entry_credits", "make_engine"]
