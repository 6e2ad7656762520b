"""Index building: dense FAISS indexes and BM25 Lucene indexes, each a directory with a manifest.

Submodules import their heavy libraries (faiss, the JVM) only when used.
"""

from irkit.index.bm25 import Bm25Index, build_bm25_index
from irkit.index.dense import DenseIndex, build_dense_index
from irkit.index.manifest import index_type, read_manifest

__all__ = ["Bm25Index", "DenseIndex", "build_bm25_index", "build_dense_index", "index_type", "read_manifest"]
