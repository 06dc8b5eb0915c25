"""bench/pruning/grid_data.py: the quality grid's synthetic-Criteo data and its generator info."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from shaver.data.synthetic import synth_criteo
from shaver.errors import DataError

SCRIPT = Path(__file__).parents[1] / "bench" / "pruning" / "grid_data.py"


@pytest.fixture(scope="module")
def grid_data():
    spec = importlib.util.spec_from_file_location("grid_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_info_matches_the_prepared_draw(grid_data, tmp_path):
    dataset, info = grid_data.open_grid_dataset("synthetic-criteo", 1500, tmp_path, seed=2)
    assert dataset.num_rows("all") == 1500 and info["rows"] == 1500
    reference = synth_criteo(tmp_path / "ref.txt", 1500, seed=2, quiet=True)
    assert info["hidden_auc"] == reference["hidden_auc"]
    # the prepared splits hold the very labels the generator info was computed on
    assert info["positive_rate_prepared"] == pytest.approx(info["positive_rate"], abs=1e-12)
    labels = np.array([int(line[0]) for line in (tmp_path / "ref.txt").read_text().splitlines()])
    assert info["positive_rate"] == pytest.approx(labels.mean())
    again, info_again = grid_data.open_grid_dataset("synthetic-criteo", 1500, tmp_path, seed=2)
    assert again.fingerprint == dataset.fingerprint and info_again == info
    stored = json.loads((tmp_path / "synthetic-criteo-1500-s2.info.json").read_text())
    assert stored["hidden_auc"] == info["hidden_auc"]


def test_unknown_dataset_is_a_data_error(grid_data, tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'criteo-full'"):
        grid_data.open_grid_dataset("criteo-full", 1000, tmp_path)
