"""MovieLens-100k built-in: parsing from a tiny hand-made wheel (fast) and the real one (slow)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from shaver.data import builtin
from shaver.data.builtin import extract_movielens, load_builtin, prepare_movielens_from_wheel
from shaver.errors import DataError

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    + "".join(f"{u}\t{i}\t{r}\t88{u}{i}\n" for u, i, r in
              [(1, 1, 5), (1, 2, 3), (2, 1, 4), (2, 3, 1), (3, 2, 4), (3, 3, 2), (1, 3, 4),
               (2, 2, 5), (3, 1, 3), (4, 9, 4)] * 3)
)
USER = ("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n3\t23\tM\twriter\t32067\n")
ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n2\tGoldenEye\t1995\tAction Thriller\n"
        "3\tFour \"Rooms\"\t\tThriller\n")


def make_wheel(path: Path, members: dict[str, str] | None = None) -> Path:
    members = members if members is not None else {"inter": INTER, "user": USER, "item": ITEM}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("recbole/__init__.py", "")
        for ext, text in members.items():
            zf.writestr(f"recbole/dataset_example/ml-100k/ml-100k.{ext}", text)
    return path


def test_tiny_wheel_fields_labels_and_joins(tmp_path):
    ds = prepare_movielens_from_wheel(make_wheel(tmp_path / "r.whl"), tmp_path / "ml",
                                      name="movielens-100k-genre-token")
    assert ds.field_names == ["user", "item", "age", "gender", "occupation", "zip",
                              "release_year", "genre"]
    assert ds.num_rows("all") == 30
    x, y = ds.arrays("all")
    rows = np.concatenate([np.load(ds.path / f"{s}_rows.npy") for s in ("train", "val", "test")])
    ratings = [int(line.split("\t")[2]) for line in INTER.splitlines()[1:]]
    assert np.array_equal(y, np.array([r >= 4 for r in ratings], np.float32)[rows])
    vocab = ds.vocabularies
    local = x - ds.offsets
    users = [INTER.splitlines()[1:][r].split("\t")[0] for r in rows]
    genre_of_user_row = [vocab["genre"][j] for j in local[:, 7]]
    items = [INTER.splitlines()[1:][r].split("\t")[1] for r in rows]
    expected_genre = {"1": "Animation Children's Comedy", "2": "Action Thriller",
                      "3": "Thriller", "9": ""}
    for item, genre, lid in zip(items, genre_of_user_row, local[:, 7]):
        if lid != 0:  # values unseen on train are OOV
            assert genre == expected_genre[item]
    # user 4 has no profile: its age is the missing token, not an error
    for user, lid in zip(users, local[:, 2]):
        if user == "4" and lid != 0:
            assert vocab["age"][lid] == ""
    assert "" in vocab["release_year"] or all(i != "3" for i in items)


def test_missing_member_is_reported(tmp_path):
    wheel = make_wheel(tmp_path / "r.whl", {"inter": INTER, "user": USER})
    with pytest.raises(DataError, match=r"r\.whl: recbole/dataset_example/ml-100k/ml-100k\.item "
                                        r"is missing from the wheel"):
        extract_movielens(wheel, tmp_path)


def test_not_a_zip(tmp_path):
    bad = tmp_path / "bad.whl"
    bad.write_text("not a zip")
    with pytest.raises(DataError, match="bad.whl: not a readable wheel"):
        extract_movielens(bad, tmp_path)


def test_load_builtin_uses_cache_and_local_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAVER_RECBOLE_WHEEL", str(make_wheel(tmp_path / "r.whl")))
    monkeypatch.setenv("SHAVER_CACHE", str(tmp_path / "cache"))
    first = load_builtin(quiet=True)
    assert first.path.parent == tmp_path / "cache"
    monkeypatch.setenv("SHAVER_RECBOLE_WHEEL", str(tmp_path / "absent.whl"))
    again = load_builtin(quiet=True)  # cached: the (now absent) wheel is not read
    assert again.fingerprint == first.fingerprint


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("SHAVER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert builtin.cache_dir() == tmp_path / "shaver"
    monkeypatch.setenv("SHAVER_CACHE", str(tmp_path / "x"))
    assert builtin.cache_dir() == tmp_path / "x"


def test_unknown_builtin():
    with pytest.raises(DataError, match="unknown built-in dataset 'ml-1m': expected one of "
                                        "movielens-100k"):
        load_builtin("ml-1m")


def test_pip_failure_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SHAVER_RECBOLE_WHEEL", raising=False)
    monkeypatch.setattr(builtin, "WHEEL_REQUIREMENT", "recbole==0.0.0.no.such.version")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(DataError, match="could not download recbole==0.0.0.no.such.version"):
        builtin.download_wheel(tmp_path)


@pytest.mark.slow
def test_real_movielens_100k(tmp_path):
    ds = load_builtin(cache_dir=tmp_path, quiet=True)
    assert ds.num_rows("all") == 100_000
    assert ds.field_dims[0] == 944  # 943 users + OOV
    assert 0.5 < ds.meta["positive_rate"]["train"] < 0.6  # rating >= 4 is 55.4% of ratings
    for split, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(ds.num_rows(split) / 100_000 - share) < 0.01
    again = load_builtin(cache_dir=tmp_path, quiet=True)
    assert again.fingerprint == ds.fingerprint
