"""shaver.train: fit, evaluate, checkpoints.

* :func:`shaver.train.loop.fit` - Adam + early stopping on validation AUC, resumable,
  seeded, CUDA when present, data-parallel under ``torchrun``;
* :func:`shaver.train.loop.evaluate` / :func:`shaver.train.loop.predict_proba`;
* :mod:`shaver.train.checkpoint` - run directories (config.json + model.safetensors):
  ``save_run``, ``load_run``, ``open_run_dataset``, ``model_fingerprint``;
* :func:`shaver.train.metrics.auc_logloss`, :func:`shaver.train.device.pick_device`.
"""
