"""Read a middleware list from a JSON, YAML or TOML file, for use outside Datasette."""
from __future__ import annotations

import json
import pathlib
from typing import Any

from .errors import ConfigError, Problem, type_name

try:
    import tomllib
except ImportError:  # Python 3.9 and 3.10: the same parser is published as tomli
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ImportError:
        tomllib = None  # type: ignore[assignment]

try:
    import yaml
except ImportError:  # PyYAML is optional: only YAML files need it
    yaml = None  # type: ignore[assignment]

LIST_KEY = "middleware"


def load_entries(path: str) -> Any:
    """Return the list of entries in ``path``.

    JSON and YAML files may hold the list itself; any format may hold it under a top-level
    ``middleware`` key, which TOML needs (``[[middleware]]`` tables).
    """
    file = pathlib.Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([Problem(path, f"cannot read the config file: {error.strerror or error}")]) from None
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            if tomllib is None:
                raise ConfigError([Problem(path, "reading TOML before Python 3.11 needs tomli: pip install tomli")])
            data: Any = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            if yaml is None:
                raise ConfigError([Problem(path, "reading YAML needs PyYAML: pip install pyyaml")])
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError([Problem(path, f'found extension "{suffix}", expected .json, .yaml, .yml or .toml')])
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError([Problem(path, f"is not valid {suffix[1:].upper()}: {error}")]) from None
    if isinstance(data, dict):
        if LIST_KEY not in data:
            raise ConfigError(
                [Problem(path, f'found an object with keys {sorted(data)}, expected a top-level "{LIST_KEY}" list')]
            )
        return data[LIST_KEY]
    if isinstance(data, list):
        return data
    raise ConfigError([Problem(path, f'found {type_name(data)}, expected a list of entries or a "{LIST_KEY}" key')])
