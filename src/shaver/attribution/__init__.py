"""shaver.attribution: the Shapley value of every embedding entry (METHOD.md sections 2-4).

Modules, in the order data flows through them::

    codebook.py      field-aware codebook (frequency-weighted per-field mean) / zero variant
    imputer.py       PlaceholderImputer: the model's logits with only the entries in S kept
    sampling.py      the attribution data D and its seeded stream of samples
    permutations.py  per-sample permutations as a function of (seed, global sample index)
    estimator/       reference loop (one head call per step) and fast engine (whole walks per
                     pass, incremental first layers for DeepFM/FM and DCN-V2/DCN-Mix)
    accumulator.py   sums, standard errors, SAGE stopping ratio, save/resume/merge
    evidence.py      standard errors that count the rows not yet walked (the cut rule's)
    stopping.py      when to stop: the cut rule (default) or the paper's SAGE rule
    runner.py        rounds of batches, stopping rule, checkpoints, progress bar
    distributed.py   torch.distributed sharding + all-reduce of the accumulators
    exact.py         exact Shapley values by enumeration (test oracle, m*d <= 12)
    result.py        Attribution (phi, stderr, count, codebook, settings, fingerprints)
    cost.py          what an attribution cost, in training epochs of the same run
    api.py           attribute(model, dataset, ...)
    cli.py           `shaver attribute`
"""
