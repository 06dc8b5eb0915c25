"""The curated public API: every exported name resolves, and `import shaver` stays torch-free."""

from __future__ import annotations

import subprocess
import sys

import pytest

import shaver


@pytest.mark.parametrize("name", [n for n in shaver.__all__ if n != "__version__"])
def test_every_exported_name_resolves(name):
    value = getattr(shaver, name)
    assert value is not None
    assert getattr(value, "__doc__", None), f"shaver.{name} has no docstring"


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        shaver.nope  # noqa: B018


def test_runtime_names_load_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import shaver\n"
        "assert shaver.load_artifact and shaver.open_dataset\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
