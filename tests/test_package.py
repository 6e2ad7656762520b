"""The package surface: every public name resolves, and ``import irkit`` loads no heavy library."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import irkit
import irkit.tune


@pytest.mark.parametrize("package", [irkit, irkit.tune])
def test_every_lazy_name_resolves(package) -> None:
    for name in package.__all__:
        assert getattr(package, name) is not None, name
        assert name in dir(package)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        package.nope  # noqa: B018


def test_every_name_the_docs_call_on_irkit_exists() -> None:
    """``irkit.X`` in the README and docs/ is what users type: each must resolve."""
    root = Path(__file__).resolve().parents[1]
    texts = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    names = {n for t in texts for n in re.findall(r"\birkit\.([A-Z]\w*)", t.read_text(encoding="utf-8"))}
    assert len(names) > 10
    assert sorted(n for n in names if not hasattr(irkit, n)) == []


def test_import_irkit_loads_no_heavy_library() -> None:
    code = (
        "import sys, irkit, irkit.tune; heavy = ['torch', 'faiss', 'pyserini', 'ray', 'transformers', 'jnius'];"
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
