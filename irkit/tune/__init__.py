"""irkit.tune."""
