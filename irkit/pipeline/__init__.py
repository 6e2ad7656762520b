"""irkit.pipeline."""
