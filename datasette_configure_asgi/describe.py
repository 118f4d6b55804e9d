"""The resolved chain as plain data and as text: for the introspection pages and the check commands."""
from __future__ import annotations

import functools
import importlib.metadata
import json
import pathlib
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

from .chain import Chain
from .config import ResolvedEntry


def chain_rows(chain: Optional[Chain], source: str) -> Dict[str, Any]:
    """Describe a chain as plain data: what the JSON page returns and the HTML page shows."""
    if chain is None:
        return {"source": None, "middleware": [], "disabled": []}
    rows = []
    for position, entry in enumerate(chain.entries, start=1):
        distribution, version = distribution_of(module_of(entry))
        rows.append(
            {
                "position": position,
                "config_index": entry.index,
                "target": entry.target,
                "distribution": distribution,
                "version": version,
                "source": source,
                "args": entry.shown_args,
                "scopes": list(entry.scopes) if entry.scopes is not None else None,
                "include_paths": list(entry.include_paths),
                "exclude_paths": list(entry.exclude_paths),
            }
        )
    disabled = [{"config_index": index, "target": target} for index, target in chain.disabled]
    return {"source": source, "middleware": rows, "disabled": disabled}


@functools.lru_cache(maxsize=256)
def distribution_of(module_name: str) -> Tuple[Optional[str], Optional[str]]:
    """The installed distribution that ships the module ``module_name``, and its version.

    The top-level name is not enough for a namespace package that several distributions share
    (``opentelemetry``): then the module's file is looked up in each candidate's list of files,
    and failing that (an editable install) the distribution named most like the module wins.
    """
    candidates = list(dict.fromkeys(_packages_distributions().get(module_name.split(".")[0]) or []))
    if len(candidates) > 1:
        name = _shipping_the_file(module_name, candidates) or _named_like(module_name, candidates)
    else:
        name = candidates[0] if candidates else None
    if name is None:
        return None, None
    try:
        return name, importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return name, None


def _shipping_the_file(module_name: str, candidates: List[str]) -> Optional[str]:
    file = getattr(sys.modules.get(module_name), "__file__", None)
    if not file:
        return None
    path = pathlib.Path(file).resolve()
    for name in candidates:
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        root = pathlib.Path(str(distribution.locate_file(""))).resolve()
        try:
            relative = path.relative_to(root).as_posix()
        except ValueError:
            continue
        if any(entry.as_posix() == relative for entry in distribution.files or ()):
            return name
    return None


def _named_like(module_name: str, candidates: List[str]) -> Optional[str]:
    """The candidate whose name is the longest leading part of the module's, as in opentelemetry-instrumentation-asgi."""
    normalised = {re.sub(r"[-_.]+", "-", name).lower(): name for name in candidates}
    parts = module_name.split(".")
    for length in range(len(parts), 0, -1):
        name = normalised.get(re.sub(r"[-_.]+", "-", ".".join(parts[:length])).lower())
        if name:
            return name
    return None


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> Dict[str, List[str]]:
    return importlib.metadata.packages_distributions()


def module_of(entry: ResolvedEntry) -> str:
    """The module the entry's code lives in: where a re-exported class is defined, else the target's module."""
    module = getattr(entry.factory, "__module__", None)
    if isinstance(module, str) and module in sys.modules:
        return module
    return entry.target.partition(":")[0] if ":" in entry.target else entry.target.rpartition(".")[0]


def chain_text(chain: Optional[Chain], source: str, where: str) -> str:
    """The chain as lines for a terminal, outermost first."""
    data = chain_rows(chain, source)
    if not data["middleware"] and not data["disabled"]:
        return f"No middleware configured under {where}."
    lines = [f"{where} from {source}: {len(data['middleware'])} middleware, outermost first"]
    for row in data["middleware"]:
        dist = f"{row['distribution']} {row['version'] or ''}".strip() if row["distribution"] else "local code"
        lines.append(f"  {row['position']}. {row['target']}  ({dist})")
        if row["args"]:
            lines.append(f"     args: {json.dumps(row['args'], sort_keys=True, default=repr)}")
        if row["scopes"] is not None:
            lines.append(f"     scopes: {', '.join(row['scopes'])}")
        if row["include_paths"]:
            lines.append(f"     include_paths: {', '.join(row['include_paths'])}")
        if row["exclude_paths"]:
            lines.append(f"     exclude_paths: {', '.join(row['exclude_paths'])}")
    for row in data["disabled"]:
        lines.append(f"  -  {row['target']}  (disabled)")
    return "\n".join(lines)
