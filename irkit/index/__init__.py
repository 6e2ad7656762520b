"""irkit.index."""
