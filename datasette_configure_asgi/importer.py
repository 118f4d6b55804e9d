"""Turn "pkg.mod.Class" or "pkg.mod:attr" into the object it names, with errors that say what was meant.

An ImportError raised inside the module is shown as that module's failure, not as "not found".
A name asked for in a package that lives in one of its submodules (``starlette.middleware.GZipMiddleware``)
is found there, and the working path is suggested.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
import types
import warnings
from typing import Any, Callable, List, Optional

from .errors import Problem, did_you_mean, quote, type_name

# Searching submodules imports them: at most this many, two levels down, only when the config is already wrong.
SUBMODULE_IMPORT_LIMIT = 40


def import_target(target: Any, loc: str, problems: List[Problem]) -> Optional[Callable[..., Any]]:
    """The object ``target`` names ("pkg.mod.Class" or "pkg.mod:attr"), or None after adding a problem that says why."""
    if not isinstance(target, str):
        problems.append(Problem(loc, f'found {type_name(target)} {quote(target)}, expected a string like "pkg.mod.Class" or "pkg.mod:attr"'))
        return None
    if ":" in target:
        module_name, _, attr_path = target.partition(":")
    else:
        module_name, _, attr_path = target.rpartition(".")
    if not module_name or not attr_path:
        problems.append(
            Problem(
                loc,
                f'found {quote(target)}, expected an import path with a module part, like "pkg.mod.Class" or "pkg.mod:attr"',
            )
        )
        return None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            problems.append(Problem(loc, _module_not_found(missing, target)))
        else:
            problems.append(Problem(loc, f'module "{module_name}" was found but failed to import: {type(error).__name__}: {error}'))
        return None
    except Exception as error:  # the module's own code failed: show its error, not "not found"
        problems.append(Problem(loc, f'module "{module_name}" was found but failed to import: {type(error).__name__}: {error}'))
        return None
    obj: Any = module
    walked = module_name
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            found = in_submodules(obj, part) if obj is module else None
            if found:
                module_path, _, name = found.rpartition(".")
                hint = f'; did you mean "{module_path}:{name}"?' if ":" in target else f'; did you mean "{found}"?'
                hint += f" (it is in the submodule {module_path})"
            else:
                hint = did_you_mean(part, [n for n in dir(obj) if not n.startswith("_")])
            problems.append(Problem(loc, f'"{walked}" has no attribute "{part}"{hint}'))
            return None
        obj = getattr(obj, part)
        walked = f"{walked}.{part}"
    if not callable(obj):
        problems.append(
            Problem(loc, f'"{target}" is {type_name(obj)} {quote(obj)}, expected a middleware class or factory callable')
        )
        return None
    return obj


def _module_not_found(missing: str, target: str) -> str:
    parent, _, leaf = missing.rpartition(".")
    if parent:
        try:
            spec = importlib.util.find_spec(parent)
        except Exception:
            spec = None
        locations = spec.submodule_search_locations if spec else None
        names = [m.name for m in pkgutil.iter_modules(locations)] if locations else []
    else:
        names = [m.name for m in pkgutil.iter_modules()] + list(sys.builtin_module_names)
    hint = did_you_mean(leaf, names) or "; is the package installed in this environment?"
    return f'module "{missing}" not found (from {quote(target)}){hint}'


def in_submodules(package: types.ModuleType, name: str, depth: int = 2) -> Optional[str]:
    """The dotted path of ``name`` in a submodule of ``package``, or None.

    Submodules already imported are looked in first, then those whose names the wanted name
    suggests ("gzip" for "GZipMiddleware"), then the rest; private ones and tests are skipped.
    """
    pending = [(package, 0)]
    imported = 0
    while pending:
        parent, level = pending.pop(0)
        for child_name in _ranked_children(parent, name):
            child = sys.modules.get(child_name)
            if child is None:
                if imported >= SUBMODULE_IMPORT_LIMIT:
                    return None
                imported += 1
                child = _quiet_import(child_name)
                if child is None:
                    continue
            for candidate in (name, *[n for n in dir(child) if n.lower() == name.lower() and n != name]):
                found = getattr(child, candidate, None)
                if callable(found):
                    return _defining_path(found) or f"{child_name}.{candidate}"
            if level + 1 < depth and hasattr(child, "__path__"):
                pending.append((child, level + 1))
    return None


def _defining_path(obj: Any) -> Optional[str]:
    """Where ``obj`` is defined (``uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware``), when importable from there."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    qualname = getattr(obj, "__qualname__", "")
    if module is None or "." in qualname or getattr(module, qualname, None) is not obj:
        return None
    return f"{module.__name__}.{qualname}"


def _ranked_children(parent: types.ModuleType, name: str) -> List[str]:
    path = getattr(parent, "__path__", None)
    if path is None:
        return []
    wanted = name.lower().replace("_", "")
    children = [
        f"{parent.__name__}.{info.name}"
        for info in pkgutil.iter_modules(list(path))
        if not info.name.startswith("_") and info.name not in ("test", "tests")
    ]

    def rank(child: str) -> tuple:
        leaf = child.rpartition(".")[2].replace("_", "")
        return (child not in sys.modules, leaf not in wanted, child)

    return sorted(children, key=rank)


def _quiet_import(module_name: str) -> Optional[types.ModuleType]:
    """Import a submodule only to look inside it: its failures and warnings are not the user's concern."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module_name)
    except Exception:
        return None
