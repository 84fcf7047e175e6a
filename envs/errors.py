"""The error every layer raises for bad user input (YAML settings, env_config, paths, flags), and the "did you mean"
hint its messages carry. Envs raise it from their config checks, so it lives in the lowest layer; train.py and
rollout.py print it as one line (marlkit/cli.py)."""

from __future__ import annotations

import difflib
from typing import Iterable


class ConfigError(Exception):
    """A problem in what the user gave us (YAML, paths, flags); printed as one line, without a traceback."""


def closest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or ''.

    A candidate that starts with `name` (a truncated key such as `grace` for `grace_period`) wins over spelling
    similarity.

    Example:
        >>> closest("grace", ["grace_period", "metric"])
        " (did you mean 'grace_period'?)"
    """
    name, candidates = str(name), [str(c) for c in candidates]
    match = [c for c in candidates if c.startswith(name) and len(name) >= 3]
    match = match or difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
