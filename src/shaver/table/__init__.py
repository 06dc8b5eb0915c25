"""The embedding table as every later stage sees it: budgets, rankings, plans and sizes.

Below attribution, pruning and deploy (which all use it), above models and the numpy
runtime (whose formats it plans):

* :mod:`~shaver.table.budget`: the one budget type and its parser;
* :mod:`~shaver.table.order`: the ranking of entries, sorted once, and its cuts;
* :mod:`~shaver.table.mask`, :mod:`~shaver.table.tiers`: the torch module of a table plan
  (kept entries in precision tiers, pruned entries read the codebook);
* :mod:`~shaver.table.plan`, :mod:`~shaver.table.families`: tier specs and plan families;
* :mod:`~shaver.table.size`: the exact size oracle of an artifact and of its table.
"""
