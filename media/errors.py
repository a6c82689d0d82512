"""The one exception type the media package raises for problems with a user's files."""
from __future__ import annotations

import os


class MediaError(ValueError):
    """A media file is missing, unreadable, lacks a needed stream, or cannot be written.

    The message names the file, the problem and, where there is one, the fix. `path` holds the file.
    It subclasses ValueError so callers that validate inputs generically still catch it.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str, fix: str | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path is not None else ""
        message = f"{where}{problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)
