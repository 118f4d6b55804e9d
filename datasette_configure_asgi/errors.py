"""The error raised when a middleware config is wrong: every problem, each with its location."""
from __future__ import annotations

import dataclasses
import difflib
from typing import Iterable


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with the config, at one place in it.

    ``location`` reads like an expression into the config, for example
    ``datasette-configure-asgi[2].args.fiel``, so a user can find the line to fix.
    """

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class ConfigError(ValueError):
    """Raised at startup when one or more entries cannot be used.

    All problems are collected before this is raised, so one run shows everything to fix.
    """

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__(self.format())

    def format(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} problems in the middleware config:"]
        lines.extend(f"  - {problem}" for problem in self.problems)
        return "\n".join(lines)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return '; did you mean "x"?' for the closest candidate, or '' when none is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f'; did you mean "{matches[0]}"?' if matches else ""


def quote(value: object, limit: int = 80) -> str:
    """A short, unambiguous rendering of a config value for an error message."""
    text = repr(value)
    if isinstance(value, str):
        text = '"' + value.replace('"', '\\"') + '"'
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def type_name(value: object) -> str:
    """Name a JSON-ish value's type the way a config author thinks of it."""
    if value is None:
        return "null"
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)

