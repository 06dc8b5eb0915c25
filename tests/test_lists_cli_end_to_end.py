"""From raw rows to a deployed model with list columns, on the command line only:
a CSV with a list column and a weighted list column -> `shaver data prepare` -> `shaver
train` -> `shaver attribute` -> `shaver prune` (a sparsity and an artifact-byte budget) ->
`shaver export` (.shaver and ONNX) -> `shaver predict` on raw new rows (an unseen list
value, an empty list, a list longer than max_len) scores them as the pruned torch model
does on the rows the RowEncoder encodes, and onnxruntime scores the same."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from shaver.cli import main
from shaver.data.encode import RowEncoder
from shaver.deploy.onnx_bags import slots_to_feeds
from shaver.layout import PAD
from shaver.pruning.io import load_pruned
from shaver.runtime import load_artifact

SPEC = """\
name: history
input: {format: csv, header: true}
label: {column: click}
min_count: 1
fields:
  - {name: user}
  - {name: seen, kind: list, separator: "|", max_len: 3, keep: last, pooling: mean}
  - {name: tags, kind: list, weighted: true, pooling: sum, max_len: 2}
split: {method: random, fractions: [0.7, 0.15, 0.15], seed: 1}
"""
ITEMS = ["shoes", "book", "phone", "case", "lamp", "mug"]
TAGS = ["sale", "new", "gift"]
#: new rows: an unseen user and item, an empty list of each kind, lists longer than max_len
#: (seen keeps its LAST 3, tags its first 2), a repeated value
NEW = """\
user,seen,tags
u1,shoes|book,sale:2|new:1
nobody,zeppelin|book,gift:0.5
u2,,
u3,mug|lamp|case|phone|shoes,sale:1|new:2|gift:3
u0,book|book|zeppelin,
u4,,new:1.5
"""


def _rows(n: int, seed: int) -> str:
    """A CSV of n clicks whose label depends on the user, the items seen and the tags."""
    rng = np.random.default_rng(seed)
    item_w = dict(zip(ITEMS, rng.normal(0, 1.5, len(ITEMS))))
    tag_w = dict(zip(TAGS, rng.normal(0, 1.0, len(TAGS))))
    lines = ["user,seen,tags,click"]
    for _ in range(n):
        user = f"u{rng.integers(0, 8)}"
        seen = list(rng.choice(ITEMS, rng.integers(0, 5)))
        tags = [(t, round(float(rng.uniform(0.5, 3)), 2))
                for t in rng.choice(TAGS, rng.integers(0, 3), replace=False)]
        logit = (np.mean([item_w[i] for i in seen]) if seen else 0.0) \
            + sum(tag_w[t] * v for t, v in tags) + (0.8 if user in ("u1", "u2") else -0.3)
        click = int(rng.random() < 1 / (1 + np.exp(-logit)))
        lines.append(f"{user},{'|'.join(seen)},{'|'.join(f'{t}:{v}' for t, v in tags)},{click}")
    return "\n".join(lines) + "\n"


def _cli(*argv: str) -> None:
    assert main(list(argv)) == 0, argv


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """prepare -> train -> attribute -> prune (two budgets) on the command line."""
    root = tmp_path_factory.mktemp("lists-e2e")
    (root / "history.csv").write_text(_rows(500, seed=0))
    (root / "history.yaml").write_text(SPEC)
    data, run = root / "data", root / "run"
    _cli("data", "prepare", "--spec", str(root / "history.yaml"), "--input",
         str(root / "history.csv"), "--out", str(data), "-q")
    _cli("train", "--data", str(data), "--model", "deepfm", "--embed-dim", "4", "--epochs", "2",
         "--batch-size", "64", "--device", "cpu", "--out", str(run), "-q")
    _cli("attribute", "--run", str(run), "--max-samples", "300", "--batch-size", "64",
         "--device", "cpu", "-q")
    attribution = run / "attribution-codebook.safetensors"
    assert attribution.is_file()
    _cli("prune", "--run", str(run), "--attribution", str(attribution), "--sparsity", "0.5",
         "--out", str(root / "pruned"), "--device", "cpu", "-q")
    dense = json.loads((root / "pruned" / "results.json").read_text())[0]["artifact_bytes"]
    size = dense - 100  # below the 0.5 cut: the chooser has to trade entries or bits
    _cli("prune", "--run", str(run), "--attribution", str(attribution), "--bytes", str(size),
         "--out", str(root / "pruned"), "--device", "cpu", "-q")
    (root / "new.csv").write_text(NEW)
    return root, data, size


@pytest.mark.parametrize("cut", ["auto-sparsity-0.5", "auto-bytes"])
def test_raw_rows_score_alike_through_predict_torch_and_onnx(pipeline, tmp_path, capsys, cut):
    root, data, size = pipeline
    if cut == "auto-bytes":
        cut = f"auto-bytes-{size}"
    pruned = root / "pruned" / cut
    artifact = tmp_path / "model.shaver"
    _cli("export", "--pruned", str(pruned), "--out", str(artifact))
    art = load_artifact(artifact)
    assert art.layout.describe(art.field_names) == (
        "seen: bag of <= 3, mean; tags: bag of <= 2, sum, weighted")
    if cut.startswith("auto-bytes"):
        assert artifact.stat().st_size <= size
    capsys.readouterr()
    _cli("predict", "--artifact", str(artifact), "--input", str(root / "new.csv"))
    printed = capsys.readouterr().out.split()
    assert printed[0] == "probability"
    scores = np.array(printed[1:], dtype=np.float64)

    # the rows as the RowEncoder encodes them, through the pruned torch model
    header, *lines = NEW.splitlines()
    rows = [dict(zip(header.split(","), line.split(","))) for line in lines]
    x, w = RowEncoder.from_dataset(data).encode_slots(rows)
    lay = art.layout
    seen = slice(int(lay.starts[1]), int(lay.starts[2]))
    tags = slice(int(lay.starts[2]), int(lay.starts[3]))
    assert (x[2, seen] == PAD).all() and (x[2, tags] == PAD).all()  # empty lists
    assert (x[3, seen] >= 0).all() and (x[3, tags] >= 0).all()  # too long: cut to max_len
    assert x[1, seen][0] == x[4, seen][2]  # "zeppelin" (unseen) -> the field's OOV id
    np.testing.assert_array_equal(w[3, tags], [1.0, 2.0])  # tags keep the first two
    model = load_pruned(pruned, device="cpu").model
    with torch.no_grad():
        logits = model(torch.from_numpy(x), torch.from_numpy(w)).double()
    ref = torch.sigmoid(logits).numpy()
    np.testing.assert_allclose(scores, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(art.predict(x, w), ref, atol=1e-5, rtol=0)

    # the ONNX export of the same cut: lists as values + offsets
    ort = pytest.importorskip("onnxruntime")
    onnx = tmp_path / "model.onnx"
    _cli("export", "--format", "onnx", "--artifact", str(artifact), "--out", str(onnx))
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    feeds = slots_to_feeds(lay, x, w, art.field_names)
    assert [i.name for i in session.get_inputs()] == list(feeds)
    _, prob = session.run(None, feeds)
    np.testing.assert_allclose(prob, ref, atol=1e-5, rtol=0)
