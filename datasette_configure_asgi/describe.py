"""The resolved chain as plain data and as text: for the introspection pages and the check commands."""
from __future__ import annotations

import functools
import importlib.metadata
import json
from typing import Any, Dict, List, Optional, Tuple

from .chain import Chain


def chain_rows(chain: Optional[Chain], source: str) -> Dict[str, Any]:
    """Describe a chain as plain data: what the JSON page returns and the HTML page shows."""
    if chain is None:
        return {"source": None, "middleware": [], "disabled": []}
    rows = []
    for position, entry in enumerate(chain.entries, start=1):
        distribution, version = distribution_of(entry.target)
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
def distribution_of(target: str) -> Tuple[Optional[str], Optional[str]]:
    """The installed distribution that provides ``target``'s top-level package, and its version."""
    top = target.replace(":", ".").split(".")[0]
    names = _packages_distributions().get(top) or []
    if not names:
        return None, None
    name = names[0]
    try:
        return name, importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return name, None


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> Dict[str, List[str]]:
    return importlib.metadata.packages_distributions()


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
