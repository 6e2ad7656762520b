"""The one exception type irkit raises for user error."""

from __future__ import annotations

from pathlib import Path


class IrkitError(Exception):
    """A user-facing error: says what went wrong and where (file and line, or id)."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.message = message  # without the file and line
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)


class IrkitWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. qrels that judge none of the run)."""
