"""Errors that end a command with a one-line reason (exit status 2)."""

from __future__ import annotations


class DasdError(Exception):
    """Base for errors shown to the user as one line, without a traceback."""


class InputError(DasdError):
    """Bad input data: names the file, the line (1-based) and the field."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")


class ConfigError(DasdError):
    """Bad configuration (YAML file or key=value override)."""
