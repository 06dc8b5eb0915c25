"""Built-in real dataset: MovieLens-100k, taken from the PyPI wheel ``recbole==1.2.1``.

The wheel (a zip) ships RecBole's atomic files ``ml-100k.{inter,user,item}``. They are
fetched once with ``pip download --no-deps`` (or read from a wheel you point
``SHAVER_RECBOLE_WHEEL`` at), extracted, and prepared with the preset of the same name
(label rating >= 4; seeded 80/10/10 split, seed 2024) into the user cache directory:
``$SHAVER_CACHE``, else ``$XDG_CACHE_HOME/shaver``, else ``~/.cache/shaver``.
Two built-ins: ``movielens-100k`` (the genres a list field, mean-pooled) and
``movielens-100k-genre-token`` (the whole genre list one token, as before lists existed).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from shaver.data.store import PreparedDataset
from shaver.errors import DataError

log = logging.getLogger(__name__)

BUILTINS = ("movielens-100k", "movielens-100k-genre-token")
WHEEL_REQUIREMENT = "recbole==1.2.1"
MEMBERS = {ext: f"recbole/dataset_example/ml-100k/ml-100k.{ext}" for ext in ("inter", "user", "item")}
#: Bump when the preparation of a built-in changes, so old caches are not reused.
CACHE_VERSION = "v3"


def cache_dir() -> Path:
    """The user cache directory of shaver (see the module docstring)."""
    if os.environ.get("SHAVER_CACHE"):
        return Path(os.environ["SHAVER_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "shaver"


def download_wheel(dest: Path) -> Path:
    """``pip download --no-deps recbole==1.2.1`` into ``dest``; the wheel's path."""
    local = os.environ.get("SHAVER_RECBOLE_WHEEL")
    if local:
        return Path(local)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", WHEEL_REQUIREMENT, "-d", str(dest)]
    log.info("downloading %s (MovieLens-100k ships inside it)", WHEEL_REQUIREMENT)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("recbole-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DataError(f"could not download {WHEEL_REQUIREMENT} with pip "
                        f"({' | '.join(tail) or 'no wheel found'}); set SHAVER_RECBOLE_WHEEL "
                        f"to a local copy of the wheel")
    return wheels[0]


def extract_movielens(wheel: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract ``ml-100k.{inter,user,item}`` from the wheel into ``dest``; the .inter path."""
    wheel, dest = Path(wheel), Path(dest)
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            for ext, member in MEMBERS.items():
                if member not in names:
                    raise DataError(f"{wheel}: {member} is missing from the wheel")
                (dest / f"ml-100k.{ext}").write_bytes(zf.read(member))
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{wheel}: not a readable wheel (zip) file ({exc})") from exc
    return dest / "ml-100k.inter"


def prepare_movielens_from_wheel(wheel: str | os.PathLike[str], out: str | os.PathLike[str],
                                 *, name: str = "movielens-100k",
                                 quiet: bool = True) -> PreparedDataset:
    """Prepare MovieLens-100k from a recbole wheel file into ``out`` with the preset
    ``name`` (one of :data:`BUILTINS`)."""
    from shaver.data.prepare import prepare_dataset

    if name not in BUILTINS:
        raise DataError(f"unknown built-in dataset {name!r}: expected one of {', '.join(BUILTINS)}")
    with tempfile.TemporaryDirectory(prefix="shaver-ml100k-") as raw:
        inter = extract_movielens(wheel, raw)
        return prepare_dataset(name, inter, out, quiet=quiet)


def load_builtin(name: str = "movielens-100k", cache_dir: str | os.PathLike[str] | None = None,
                 *, quiet: bool = False) -> PreparedDataset:
    """Prepare (once, cached) and open a built-in dataset: ``movielens-100k`` (fields user,
    item, age, gender, occupation, zip, release_year, genres: a list field of up to 6
    genres, mean-pooled) or ``movielens-100k-genre-token`` (the same with field genre: the
    movie's whole genre list as one token); label rating >= 4; 80/10/10 split, seed 2024."""
    if name not in BUILTINS:
        raise DataError(f"unknown built-in dataset {name!r}: expected one of {', '.join(BUILTINS)}")
    root = Path(cache_dir) if cache_dir is not None else globals()["cache_dir"]()
    out = root / f"{name}-{CACHE_VERSION}"
    if (out / "meta.json").is_file():
        return PreparedDataset(out)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
        wheel = download_wheel(Path(tmp))
        try:
            return prepare_movielens_from_wheel(wheel, out, name=name, quiet=quiet)
        except DataError:
            if (out / "meta.json").is_file():  # another process prepared it meanwhile
                return PreparedDataset(out)
            raise
