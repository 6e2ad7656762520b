"""Every ``ci: true`` condition of eval/regressions.yaml reproduces its recorded figures.

The conditions run through eval/regress.py's own functions, so CI checks exactly what
``python eval/regress.py --ci`` checks: each measure within its tolerance, each significance
claim (e.g. the default reranking pipeline beats BM25 with p < 0.05). Full-size indexes are
built once into the git-ignored ``indexes/`` and reused while their manifests match.
"""

from __future__ import annotations

import pytest
from regress_driver import regress

pytestmark = pytest.mark.integration

SPEC = regress.load()


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> regress.Session:
    return regress.Session(SPEC, runs=tmp_path_factory.mktemp("regress-runs"))


@pytest.mark.parametrize("name", [n for n, c in SPEC.conditions.items() if c.ci])
def test_condition_reproduces_its_recorded_figures(session: regress.Session, name: str) -> None:
    outcome = session.run(name)
    assert outcome.ok, outcome.report()
