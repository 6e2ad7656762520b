"""irkit.filter."""
