"""irkit.reformulate."""
