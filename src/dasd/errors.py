"""Errors that end a command with a one-line reason (exit status 2)."""

from __future__ import annotations

import os


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


def hub_where() -> str:
    """Where a Hub lookup looked: the local cache when HF_HUB_OFFLINE is set, else the Hub."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "false", "no", "")
    return "in the local Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "on the Hugging Face Hub"


def hub_error(kind: str, name: str, revision: str | None = None) -> DasdError:
    """The one-line error for a model or tokenizer name that is not local and that the Hugging Face Hub
    (or, offline, its local cache) could not provide."""
    where = hub_where()
    at = f" at revision {revision!r}" if revision else ""
    return DasdError(f"{kind} {name!r} is not a local folder, a .gguf file or an asset, nor found{at} {where}")
