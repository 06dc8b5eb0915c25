"""Small file helpers shared by every stage: atomic writes, versioned JSON documents and the
one YAML loader (:func:`load_yaml`) of every user-written YAML file (data spec, train config,
fleet file).

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


def check_output_file(path: str | os.PathLike[str], error: type[ShaverError]) -> Path:
    """``path`` as a file to write, refused with ``error`` before any work is done when it
    cannot be: it is an existing directory, or its folder is missing or not a directory."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a directory; expected the path of a file to write")
    if not path.parent.is_dir():
        problem = "is not a directory" if path.parent.exists() else "does not exist"
        raise error(f"{path}: the directory {path.parent} {problem}")
    return path


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


#: A YAML document may expand (through aliases) to at most this many nodes per byte of text,
#: or :data:`YAML_MIN_NODES`, whichever is more. Plain YAML has fewer nodes than bytes.
YAML_NODES_PER_BYTE = 4
YAML_MIN_NODES = 10_000
#: Deepest nesting of lists and mappings a YAML document may have (PyYAML builds nested
#: nodes recursively: thousands of levels take seconds, then exhaust Python's stack).
YAML_MAX_DEPTH = 100


def load_yaml(text: str, where: str | os.PathLike[str], error: type[ShaverError]) -> Any:
    """Parse one YAML document with PyYAML's safe loader, refusing what expands out of
    proportion to its size.

    Aliases let a few hundred bytes stand for billions of nodes ("billion laughs"); building
    them (or an error message echoing them) would take gigabytes. The document's node graph
    is measured first, each alias counted at its full expanded size, and refused with
    ``error`` when it exceeds ``max(YAML_MIN_NODES, YAML_NODES_PER_BYTE * len(text))``; a
    recursive alias or nesting deeper than :data:`YAML_MAX_DEPTH` is refused too (the depth
    is read from the parser's events before any node is built). Syntax errors propagate as
    ``yaml.YAMLError`` (callers word them with file and line).
    """
    import yaml  # here, not at the top: the numpy-only runtime imports this module

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > YAML_MAX_DEPTH:
                raise error(f"{where}:{event.start_mark.line + 1}: YAML nested over "
                            f"{YAML_MAX_DEPTH} levels deep; refused")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    limit = max(YAML_MIN_NODES, YAML_NODES_PER_BYTE * len(text))
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            size = _expanded_nodes(node, {}, set(), limit)
        except RecursionError:  # pragma: no cover - the depth check comes first
            raise error(f"{where}: YAML nested too deeply") from None
        except _RecursiveAlias:
            raise error(f"{where}: a YAML alias refers to itself (recursive data); refused") \
                from None
        if size > limit:
            raise error(f"{where}: YAML aliases expand to over {limit:,} nodes, out of "
                        f"proportion to its {len(text):,} characters; refused")
        return loader.construct_document(node)
    finally:
        loader.dispose()


class _RecursiveAlias(Exception):
    pass


def _expanded_nodes(node: Any, sizes: dict[int, int], open_: set[int], limit: int) -> int:
    """Nodes of ``node`` with every alias expanded (stops counting past ``limit``)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise _RecursiveAlias
    value = node.value
    if not isinstance(value, list):  # a scalar
        return 1
    open_.add(key)
    total = 1
    for item in value:
        for child in (item if isinstance(item, tuple) else (item,)):  # mapping: (key, value)
            total += _expanded_nodes(child, sizes, open_, limit)
            if total > limit:
                break
        if total > limit:
            break
    open_.discard(key)
    sizes[key] = total
    return total
