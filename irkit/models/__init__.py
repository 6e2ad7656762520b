"""irkit.models."""
