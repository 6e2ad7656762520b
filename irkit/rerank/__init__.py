"""irkit.rerank."""
