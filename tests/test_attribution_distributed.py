"""2 ranks (torch.distributed, gloo, spawned processes) == 1 rank over the same samples."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from shaver.attribution.result import Attribution
from test_attribution_helpers import any_model, tiny_dataset

OPTS = dict(stop="sage", tolerance=None, max_samples=70, batch_size=8, quiet=True, seed=5, device="cpu",
            antithetic=True)


def _worker(rank: int, world: int, init_file: str, ds_path: str, out: str,
            cv: bool | str) -> None:
    import torch.distributed as dist

    sys.path.insert(0, str(Path(__file__).parent))
    from shaver.attribution.api import attribute
    from shaver.data.store import open_dataset

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        result = attribute(any_model("deepfm"), open_dataset(ds_path),
                           checkpoint_path=Path(out).with_suffix(".state"),
                           control_variate=cv, **OPTS)
        result.save(f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("cv", [False, True, "sampled"],
                         ids=["plain", "control-variate", "sampled-control-variate"])
def test_two_ranks_equal_one_rank(tmp_path, cv):
    from shaver.attribution.api import attribute

    ds = tiny_dataset(tmp_path / "ds")
    single = attribute(any_model("deepfm"), ds, control_variate=cv, **OPTS)
    out = str(tmp_path / "res")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(ds.path), out, cv), nprocs=2, join=True)
    ranks = [Attribution.load(f"{out}.{r}") for r in range(2)]
    for res in ranks:
        assert res.count == single.count == 70
        assert res.settings["world_size"] == 2
        assert torch.allclose(res.phi, single.phi, atol=1e-7)
        assert torch.allclose(res.stderr, single.stderr, atol=1e-7)
        assert res.bin_edges == single.bin_edges and torch.allclose(res.bins, single.bins,
                                                                     atol=1e-6)
    assert (tmp_path / "res.state").is_file()  # rank 0 checkpoints the merged state
