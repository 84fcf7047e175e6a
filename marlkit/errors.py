"""Errors of a run that could not go on, and the exception line of a trial's traceback. Bad input raises
`envs.errors.ConfigError`."""

from __future__ import annotations

import re


class RunFailure(Exception):
    """A run that could not go on (a full disk): printed as one line that says what was kept; exit code 1."""


def exception_line(text: str) -> str:
    """The exception line (`RuntimeError: ...`) that ends an error traceback, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    exceptions = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b.*: ", line)]
    return (exceptions or lines or ["unknown error"])[-1]
