"""irkit.retrieve."""
