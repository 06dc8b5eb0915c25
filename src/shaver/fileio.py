"""Small file helpers shared by every stage: atomic writes and versioned JSON documents.

Nothing is left half-written: output goes to a hidden temporary file in the target's folder
and is renamed over the target only once complete. Temporaries carry the writing process's
id (:func:`temp_prefix`), so a rerun removes what a killed run left (:func:`remove_stale_temps`)
without touching what a concurrent run is writing. Importing this module does not import torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shaver.errors import ShaverError


def _usual_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_TEMP_RE = re.compile(r"^\..+\.pid(\d+)\.")


def temp_prefix(name: str) -> str:
    """Prefix of a hidden temporary beside ``name``: ``.<name>.pid<this process id>.``."""
    return f".{name}.pid{os.getpid()}."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the hidden temporaries (:func:`temp_prefix`) in ``folder`` whose writing process
    is gone (a run killed mid-write); returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_RE.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def check_output_dir(path: str | os.PathLike[str], error: type[ShaverError],
                     flag: str = "--out") -> Path:
    """``path`` as an output folder: refused with one line when it exists and is not a folder
    (nothing is created here)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{flag} {path}: exists and is not a directory")
    return path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else it is removed.

    The temporary file exists (empty) when yielded, so writers that open it by name work.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _usual_mode())  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike[str], error: type[ShaverError], missing: str = "missing") -> Any:
    """Parse a JSON file; a missing or corrupt file raises ``error`` naming the path."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise error(f"{path}: {missing}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: corrupt JSON ({exc})") from exc


def check_format(
    doc: Any, *, fmt: str, version: int, where: str | os.PathLike[str], error: type[ShaverError]
) -> dict[str, Any]:
    """Check a document's ``format`` tag and ``format_version``; return it as a dict."""
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise error(f"{where}: format is {found!r}, expected {fmt!r}")
    if doc.get("format_version") != version:
        raise error(
            f"{where}: format_version {doc.get('format_version')!r} is not supported "
            f"(this shaver reads version {version})"
        )
    return doc


def read_tensors(
    path: str | os.PathLike[str],
    error: type[ShaverError],
    problem: str = "not a readable safetensors file",
) -> tuple[dict[str, Any], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file, read once, never unpickled.

    A missing, truncated or foreign file raises ``error``: ``"<path>: <problem> (<cause>)"``. Imports torch (through safetensors) only when called.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise error(f"{path}: {problem} ({exc})") from exc
    return tensors, metadata
