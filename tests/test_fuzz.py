"""Every reader and the YAML pipeline loader, fuzzed on a bounded number of generated files.

A target accepts its input (and whatever it accepted, irkit's writers write and its readers read
back) or raises ``IrkitError``; any other exception fails. ``IRKIT_FUZZ_EXAMPLES`` sets the count;
``eval/fuzz.py --seconds N`` runs the same targets for longer.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from fuzz_targets import TARGETS, check
from hypothesis import HealthCheck, given, settings

EXAMPLES = int(os.environ.get("IRKIT_FUZZ_EXAMPLES", "200"))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzzed_input_is_accepted_or_an_irkit_error(name: str, tmp_path: Path) -> None:
    counts: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples on every CI run
        suppress_health_check=list(HealthCheck),
    )
    @given(TARGETS[name][0])
    def fuzz(data: bytes) -> None:
        check(name, data, tmp_path, counts)

    fuzz()
    assert counts["accepted"] > 0 and counts["irkit_error"] > 0, counts  # the generator reaches both outcomes
