"""Atomic writes and versioned JSON documents (shaver.fileio)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from shaver.errors import CheckpointError
from shaver.fileio import atomic_path, check_format, read_json, write_text_atomic


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "first")
    assert target.read_text() == "first"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "first"  # nothing already stored is lost
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary left behind


def test_read_json_and_check_format_errors(tmp_path):
    with pytest.raises(CheckpointError, match="x.json: gone"):
        read_json(tmp_path / "x.json", CheckpointError, missing="gone")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(CheckpointError, match="bad.json: corrupt JSON"):
        read_json(tmp_path / "bad.json", CheckpointError)
    (tmp_path / "doc.json").write_text(json.dumps({"format": "f", "format_version": 1}))
    doc = read_json(tmp_path / "doc.json", CheckpointError)
    assert check_format(doc, fmt="f", version=1, where="doc", error=CheckpointError) is doc
    with pytest.raises(CheckpointError, match="doc: format is 'f', expected 'g'"):
        check_format(doc, fmt="g", version=1, where="doc", error=CheckpointError)
    with pytest.raises(CheckpointError, match="format is 'list', expected 'f'"):
        check_format([], fmt="f", version=1, where="doc", error=CheckpointError)
    with pytest.raises(CheckpointError, match="format_version 1 is not supported"):
        check_format(doc, fmt="f", version=2, where="doc", error=CheckpointError)
