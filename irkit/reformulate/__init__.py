"""irkit.reformulate: query rewriters (QueryRewriter stages) in front of any retriever.

- :class:`~irkit.reformulate.gencrf.GenCRF`: generate, cluster and weight LLM reformulations,
  optionally with the :class:`~irkit.reformulate.qerm.QERM` feedback loop;
- :class:`~irkit.reformulate.query2doc.Query2Doc`, :class:`~irkit.reformulate.hyde.HyDE`:
  one generated passage appended to, or searched instead of, the query;
- :class:`~irkit.reformulate.multi_query.MultiQuery`: every reformulation retrieved, runs fused by RRF.

RM3 pseudo-relevance feedback is a BM25 parameter (``BM25(index, rm3=True)``). Every LLM reply
is cached on disk (:mod:`irkit.reformulate.llm_cache`).
"""

from irkit._lazy import lazy_exports

_LAZY = {
    "GenCRF": "irkit.reformulate.gencrf",
    "QERM": "irkit.reformulate.qerm",
    "Query2Doc": "irkit.reformulate.query2doc",
    "HyDE": "irkit.reformulate.hyde",
    "MultiQuery": "irkit.reformulate.multi_query",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
