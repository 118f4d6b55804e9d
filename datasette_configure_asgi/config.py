"""Check every entry of a middleware list and resolve it to a callable, reporting all problems at once.

An entry looks like ``{"class": "pkg.mod.Class", "args": {...}}``. Everything that can be known
without building the chain is checked here: shape, keys, ``$env``/``$file`` secrets, the import,
the attribute, and whether ``args`` binds to the target's signature.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import ConfigError, Problem, did_you_mean, quote, type_name
from .argtypes import check_args
from .importer import import_target
from .masking import MASK, can_hold_secret, looks_secret, shown_value

KNOWN_KEYS = ("class", "args", "enabled", "scopes", "include_paths", "exclude_paths")
KNOWN_SCOPES = ("http", "websocket", "lifespan")



@dataclasses.dataclass(frozen=True)
class ResolvedEntry:
    """One enabled entry, imported and checked, ready to be constructed around an app."""

    index: int
    target: str
    factory: Callable[..., Any]
    args: Dict[str, Any]
    # args as they may be shown: secrets and $env/$file values replaced by MASK
    shown_args: Dict[str, Any]
    scopes: Optional[Tuple[str, ...]] = None
    include_paths: Tuple[str, ...] = ()
    exclude_paths: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Resolution:
    """Every entry of one config: the enabled ones resolved, the disabled ones named."""

    entries: Tuple[ResolvedEntry, ...]
    disabled: Tuple[Tuple[int, str], ...]


def resolve(raw: Any, where: str = "middleware") -> Resolution:
    """Check ``raw`` (the list of entries) and resolve each enabled entry.

    Raises ConfigError listing every problem found; ``where`` prefixes each location.
    """
    problems: List[Problem] = []
    if not isinstance(raw, list):
        hint = ""
        if isinstance(raw, dict) and "class" in raw:
            hint = "; wrap this single entry in [ ]"
        raise ConfigError(
            [
                Problem(
                    where,
                    f"found {type_name(raw)} {quote(raw)}, expected a list of entries "
                    f'like [{{"class": "pkg.mod.Class", "args": {{}}}}]{hint}',
                )
            ]
        )
    resolved: List[ResolvedEntry] = []
    disabled: List[Tuple[int, str]] = []
    for index, item in enumerate(raw):
        entry = _resolve_entry(item, index, f"{where}[{index}]", problems)
        if isinstance(entry, ResolvedEntry):
            resolved.append(entry)
        elif isinstance(entry, str):
            disabled.append((index, entry))
    if problems:
        raise ConfigError(problems)
    return Resolution(tuple(resolved), tuple(disabled))


def _resolve_entry(item: Any, index: int, loc: str, problems: List[Problem]):
    """Return a ResolvedEntry, the target string of a disabled entry, or None after adding problems."""
    if not isinstance(item, dict):
        problems.append(
            Problem(
                loc,
                f"found {type_name(item)} {quote(item)}, expected an object "
                f'like {{"class": "pkg.mod.Class", "args": {{}}}}',
            )
        )
        return None
    before = len(problems)
    for key in item:
        if key not in KNOWN_KEYS:
            problems.append(
                Problem(
                    f"{loc}.{key}",
                    f"unknown key{did_you_mean(str(key), KNOWN_KEYS)} "
                    f"(allowed: {', '.join(KNOWN_KEYS)})",
                )
            )
    enabled = item.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(
            Problem(f"{loc}.enabled", f"found {type_name(enabled)} {quote(enabled)}, expected true or false")
        )
    scopes = _check_scopes(item.get("scopes"), f"{loc}.scopes", problems)
    include_paths = _check_paths(item.get("include_paths"), f"{loc}.include_paths", problems)
    exclude_paths = _check_paths(item.get("exclude_paths"), f"{loc}.exclude_paths", problems)

    if "class" not in item:
        problems.append(Problem(loc, 'missing required key "class" (the import path of the middleware, like "pkg.mod.Class")'))
        return None
    target = item["class"]
    if enabled is False:
        # A disabled entry is not imported: it may name a package that is not installed here.
        return target if isinstance(target, str) else repr(target)

    raw_args = item.get("args", {})
    args: Dict[str, Any] = {}
    shown: Dict[str, Any] = {}
    if not isinstance(raw_args, dict):
        problems.append(
            Problem(
                f"{loc}.args",
                f"found {type_name(raw_args)} {quote(raw_args)}, expected an object of keyword arguments "
                f'like {{"name": value}}',
            )
        )
        raw_args = None
    else:
        args, shown = _resolve_secrets(raw_args, f"{loc}.args", problems)

    factory = import_target(target, f"{loc}.class", problems)
    if factory is not None and raw_args is not None:
        _check_signature(factory, target, args, shown, loc, problems)
    if len(problems) > before or factory is None:
        return None
    return ResolvedEntry(
        index=index,
        target=target,
        factory=factory,
        args=args,
        shown_args=shown,
        scopes=scopes,
        include_paths=include_paths,
        exclude_paths=exclude_paths,
    )


def _check_scopes(value: Any, loc: str, problems: List[Problem]) -> Optional[Tuple[str, ...]]:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(
            Problem(loc, f'found {type_name(value)} {quote(value)}, expected a list of scope types like ["http", "websocket"]')
        )
        return None
    for position, scope_type in enumerate(value):
        if scope_type not in KNOWN_SCOPES:
            problems.append(
                Problem(
                    f"{loc}[{position}]",
                    f"unknown scope type {quote(scope_type)}{did_you_mean(scope_type, KNOWN_SCOPES)} "
                    f"(expected one of: {', '.join(KNOWN_SCOPES)})",
                )
            )
    return tuple(value)


def _check_paths(value: Any, loc: str, problems: List[Problem]) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(
            Problem(loc, f'found {type_name(value)} {quote(value)}, expected a list of path prefixes like ["/api/"]')
        )
        return ()
    for position, prefix in enumerate(value):
        if not prefix.startswith("/"):
            problems.append(
                Problem(f"{loc}[{position}]", f"found {quote(prefix)}, expected a path prefix starting with /")
            )
    return tuple(value)


def _resolve_secrets(value: Any, loc: str, problems: List[Problem]) -> Tuple[Any, Any]:
    """Replace {"$env": NAME} and {"$file": PATH}; return (value, value as it may be shown)."""
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in ("$env", "$file"):
            kind, name = next(iter(value.items()))
            return _read_secret(kind, name, loc, problems), MASK
        real: Dict[str, Any] = {}
        shown: Dict[str, Any] = {}
        for key, item in value.items():
            real[key], shown[key] = _resolve_secrets(item, f"{loc}.{key}", problems)
            if looks_secret(key) and can_hold_secret(real[key]):
                shown[key] = MASK
        return real, shown
    if isinstance(value, list):
        pairs = [_resolve_secrets(item, f"{loc}[{i}]", problems) for i, item in enumerate(value)]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    return value, shown_value(value)


def _read_secret(kind: str, name: Any, loc: str, problems: List[Problem]) -> Any:
    if not isinstance(name, str):
        problems.append(Problem(loc, f"found {kind} {quote(name)}, expected a string naming the {'variable' if kind == '$env' else 'file'}"))
        return None
    if kind == "$env":
        if name not in os.environ:
            problems.append(Problem(loc, f'environment variable "{name}" is not set (it is read by {{"$env": "{name}"}})'))
            return None
        return os.environ[name]
    try:
        with open(name, encoding="utf-8") as fp:
            return fp.read().strip()
    except OSError as error:
        problems.append(Problem(loc, f'cannot read {{"$file": "{name}"}}: {error.strerror or error}'))
        return None


def _check_signature(
    factory: Callable[..., Any], target: str, args: Dict[str, Any], shown: Dict[str, Any], loc: str, problems: List[Problem]
) -> None:
    """Bind (app, **args) to the signature before calling anything, and explain a mismatch,
    including a value its parameter's annotation refuses."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # builtins and some C types have no signature: the call itself will tell
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_var_positional = any(p.kind is p.VAR_POSITIONAL for p in params)
    if not positional and not takes_var_positional:
        problems.append(
            Problem(f"{loc}.class", f'"{target}{signature}" takes no positional argument; a middleware must accept the app first, as klass(app, **args)')
        )
        return
    app_param = positional[0] if positional else None
    named = [p for p in params if p is not app_param and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params)
    accepted = ", ".join(p.name for p in named) or "none"
    for name in args:
        if accepts_any or any(p.name == name for p in named):
            continue
        if app_param is not None and name == app_param.name:
            message = f'"{name}" is the app itself and is passed by the loader; remove it from args'
        else:
            hint = did_you_mean(name, [p.name for p in named])
            message = f"unknown argument{hint}{' ' if hint else '; '}{target} accepts: {accepted}"
        problems.append(Problem(f"{loc}.args.{name}", message))
    for param in named:
        if param.default is param.empty and param.name not in args:
            problems.append(
                Problem(f"{loc}.args", f'missing required argument "{param.name}"; {target} accepts: {accepted}')
            )
    # Other positional-only parameters after the app cannot be given from a JSON object.
    for param in positional[1:]:
        if param.kind is param.POSITIONAL_ONLY and param.default is param.empty:
            problems.append(
                Problem(f"{loc}.class", f'"{target}" needs positional-only argument "{param.name}", which args cannot supply')
            )
    check_args(factory, named, args, shown, loc, problems)

