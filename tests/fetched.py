"""Skip markers for tests that need real weights the fetcher downloads (never downloaded by CI)."""

from __future__ import annotations

import pytest

from irkit.models.fetch import is_fetched


def needs(name: str) -> pytest.MarkDecorator:
    """Skip unless model ``name`` is already in the irkit cache (``irkit models fetch NAME``)."""
    return pytest.mark.skipif(
        not is_fetched(name),
        reason=f"real {name} weights are not in the irkit cache (run `irkit models fetch {name}`); "
        "tests never download them",
    )
