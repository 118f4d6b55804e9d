"""Turn resolved entries into the onion around an app: the first entry is the outermost.

Datasette asks for the wrapped app more than once (twice per process on 0.65, once per internal
``datasette.client`` request on 1.0), so resolution is cached per distinct config and a rebuild
is only the constructor calls.
"""
from __future__ import annotations

import inspect
import json
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from .config import ResolvedEntry, Resolution, resolve
from .errors import ConfigError, Problem

ASGIApp = Callable[..., Any]

_CACHE_LIMIT = 64
_cache: Dict[str, "Chain"] = {}
_cache_lock = threading.Lock()


class Chain:
    """A checked config, ready to wrap any number of apps."""

    def __init__(self, resolution: Resolution, where: str):
        self.entries: Tuple[ResolvedEntry, ...] = resolution.entries
        self.disabled = resolution.disabled
        self.where = where
        # Whether the objects returned by each factory have been checked to be ASGI 3 apps.
        self._returns_checked = False

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """Wrap ``app``: the first entry ends up outermost, so a request meets entries top to bottom."""
        if not self._returns_checked:
            return self._wrap_checking(app)
        for entry in reversed(self.entries):
            app = _gate(entry, entry.factory(app, **entry.args), app)
        return app

    def check(self) -> None:
        """Build the chain once around a stand-in app, so a factory that returns something that is
        not an ASGI 3 app fails now (at startup), not at the first request."""
        if not self._returns_checked:
            self._wrap_checking(_stand_in_app)

    def _wrap_checking(self, app: ASGIApp) -> ASGIApp:
        problems: List[Problem] = []
        for entry in reversed(self.entries):
            loc = f"{self.where}[{entry.index}]"
            try:
                wrapped = entry.factory(app, **entry.args)
            except Exception as error:
                problems.append(
                    Problem(loc, f"{entry.target}(app, **args) raised {type(error).__name__}: {error}")
                )
                continue
            complaint = asgi3_complaint(wrapped)
            if complaint:
                problems.append(Problem(loc, f"{entry.target}(app, **args) returned {complaint}"))
                continue
            app = _gate(entry, wrapped, app)
        if problems:
            problems.reverse()  # built innermost first; report in config order
            raise ConfigError(problems)
        self._returns_checked = True
        return app


async def _stand_in_app(scope, receive, send):  # pragma: no cover - never called
    raise RuntimeError("stand-in app, used only to check what each factory returns")


def chain_for(raw: Any, where: str = "middleware") -> Chain:
    """The Chain for this config, resolving it only the first time this config is seen."""
    try:
        key = where + "\0" + json.dumps(raw, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        key = where + "\0" + repr(raw)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    chain = Chain(resolve(raw, where), where)
    with _cache_lock:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.pop(next(iter(_cache)))
        _cache[key] = chain
    return chain


def wrap(app: ASGIApp, entries: Any, *, where: str = "middleware") -> ASGIApp:
    """Apply a middleware list to any ASGI app, with the same checks, order and options as the plugin.

    Raises ConfigError, listing every problem, if the list cannot be used.
    """
    return chain_for(entries, where).wrap(app)


def asgi3_complaint(obj: Any) -> Optional[str]:
    """Say why ``obj`` is not an ASGI 3 app, or return None when it looks like one."""
    if obj is None:
        return "None, expected an ASGI 3 app (did the factory forget to return the wrapped app?)"
    if inspect.isclass(obj):
        return f"the class {obj.__qualname__}, an ASGI 2 double-callable; expected an ASGI 3 app taking (scope, receive, send)"
    if not callable(obj):
        return f"{type(obj).__name__} {obj!r:.60}, which is not callable; expected an ASGI 3 app"
    try:
        params = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    expected = "expected an ASGI 3 app taking (scope, receive, send)"
    if len(positional) == 1:
        return f"a callable taking one argument ({positional[0].name}), an ASGI 2 double-callable; {expected}"
    if not positional:
        return f"a callable taking no positional argument; {expected}"
    required = [p for p in positional if p.default is p.empty]
    if len(positional) < 3 or len(required) > 3:
        taken = positional if len(positional) < 3 else required
        return f"a callable taking {len(taken)} arguments ({', '.join(p.name for p in taken)}); {expected}"
    keyword_only = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if keyword_only:
        return f"a callable that also requires the keyword argument(s) {', '.join(keyword_only)}; {expected}"
    return None


def _gate(entry: ResolvedEntry, middleware: ASGIApp, inner: ASGIApp) -> ASGIApp:
    """Put a scope/path filter in front of ``middleware`` only when the entry asks for one."""
    if entry.scopes is None and not entry.include_paths and not entry.exclude_paths:
        return middleware
    return Gate(middleware, inner, entry.scopes, entry.include_paths, entry.exclude_paths)


class Gate:
    """Send a scope to the middleware when the entry applies to it, else straight to the inner app.

    ``scopes`` limits the scope types; path prefixes apply to scopes that carry a path
    (http and websocket). Lifespan has no path, so only ``scopes`` can keep it away.
    """

    __slots__ = ("middleware", "inner", "scopes", "include_paths", "exclude_paths")

    def __init__(self, middleware: ASGIApp, inner: ASGIApp, scopes, include_paths, exclude_paths):
        self.middleware = middleware
        self.inner = inner
        self.scopes = frozenset(scopes) if scopes is not None else None
        self.include_paths = tuple(include_paths)
        self.exclude_paths = tuple(exclude_paths)

    def applies(self, scope: Dict[str, Any]) -> bool:
        if self.scopes is not None and scope["type"] not in self.scopes:
            return False
        path = scope.get("path")
        if path is None:
            return True
        if self.include_paths and not path.startswith(self.include_paths):
            return False
        return not (self.exclude_paths and path.startswith(self.exclude_paths))

    async def __call__(self, scope, receive, send):
        if self.applies(scope):
            return await self.middleware(scope, receive, send)
        return await self.inner(scope, receive, send)


__all__ = ["Chain", "ConfigError", "Gate", "asgi3_complaint", "chain_for", "wrap"]
