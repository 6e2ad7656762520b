"""irkit: retrieve-then-rerank pipelines over FAISS and Lucene indexes.

Heavy libraries (torch, faiss, pyserini, ray) load lazily, when a stage that
needs them is built, so ``import irkit`` stays fast.
"""

from __future__ import annotations

from irkit._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "IrkitError": "irkit.errors",
    "IrkitWarning": "irkit.errors",
    "Queries": "irkit.data.types",
    "Ranking": "irkit.data.types",
    "Qrels": "irkit.data.types",
    "Doc": "irkit.data.docstore",
    "DocStore": "irkit.data.docstore",
    "load_dataset": "irkit.data.datasets",
    "read_corpus": "irkit.data.io",
    "read_queries": "irkit.data.io",
    "read_qrels": "irkit.data.io",
    "read_run": "irkit.data.io",
    "write_run": "irkit.data.io",
    "Stage": "irkit.pipeline.stage",
    "Fuse": "irkit.pipeline.operators",
    "load_pipeline": "irkit.pipeline.config",
    "to_yaml": "irkit.pipeline.config",
    "CrossEncoder": "irkit.rerank.cross_encoder",
    "Runner": "irkit.pipeline.runner",
    "Interpolate": "irkit.pipeline.operators",
    "RunFile": "irkit.retrieve.run_file",
    "Retriever": "irkit.pipeline.stage",
    "Reranker": "irkit.pipeline.stage",
    "QueryRewriter": "irkit.pipeline.stage",
    "Filter": "irkit.pipeline.stage",
    "BM25": "irkit.retrieve.bm25",
    "Dense": "irkit.retrieve.dense",
    "CURRetriever": "irkit.retrieve.cur",
    "build_dense_index": "irkit.index.dense",
    "build_bm25_index": "irkit.index.bm25",
    "build_splade_index": "irkit.index.splade",
    "SpladeRetriever": "irkit.retrieve.splade",
    "ICR": "irkit.rerank.icr",
    "PRP": "irkit.rerank.prp",
    "SpladeReranker": "irkit.rerank.splade",
    "BiEncoderReranker": "irkit.rerank.bi_encoder",
    "GenCRF": "irkit.reformulate.gencrf",
    "QERM": "irkit.reformulate.qerm",
    "Query2Doc": "irkit.reformulate.query2doc",
    "HyDE": "irkit.reformulate.hyde",
    "MultiQuery": "irkit.reformulate.multi_query",
    "evaluate": "irkit.evaluation",
    "compare": "irkit.evaluation",
    "CosineFilter": "irkit.filter.cosine_adapter",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
