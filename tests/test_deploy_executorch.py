"""ExecuTorch export (skipped, and counted, where executorch is not installed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from shaver.deploy.artifact import export_artifact
from shaver.errors import ArtifactError
from test_deploy_support import pruned_model, random_ids, torch_proba

HAS_EXECUTORCH = importlib.util.find_spec("executorch") is not None


@pytest.mark.skipif(not HAS_EXECUTORCH, reason="executorch is not installed (optional)")
def test_executorch_program_matches_torch(tmp_path):
    import torch
    from executorch.runtime import Runtime

    from shaver.deploy.executorch_export import export_executorch

    model, _ = pruned_model("deepfm")
    art = export_artifact(model, tmp_path / "a.shaver").path
    path = export_executorch(art, tmp_path / "m.pte")
    method = Runtime.get().load_program(str(path)).load_method("forward")
    x = random_ids(batch=5, seed=3)
    prob = method.execute([torch.as_tensor(x)])[1].numpy()
    np.testing.assert_allclose(prob, torch_proba(model, x), atol=1e-5)
    with pytest.raises(ArtifactError, match="does not exist"):
        export_executorch(art, tmp_path / "no" / "m.pte")


@pytest.mark.skipif(HAS_EXECUTORCH, reason="executorch is installed")
def test_executorch_missing_is_a_clear_error(tmp_path):
    from shaver.deploy.executorch_export import export_executorch

    model, _ = pruned_model("lr")
    art = export_artifact(model, tmp_path / "a.shaver").path
    with pytest.raises(ArtifactError, match="needs the executorch package"):
        export_executorch(art, tmp_path / "m.pte")
    from test_deploy_cli import run
    with pytest.raises(ArtifactError, match="needs the executorch package"):
        run(["export", "--artifact", art, "--format", "executorch"])
