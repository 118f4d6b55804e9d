"""Check config values against the simple annotations of a middleware's parameters, before any request.

Without this, a string where ``int`` is annotated passes startup and then fails every request (a 500
on every page); a bare string where a list of strings is annotated is read letter by letter (a 400
on every page). Judged: ``int``, ``float``, ``str``, ``bool``, ``None``, ``dict``, ``Literal`` of
those, lists/sequences/sets/iterables of those, and unions of them (``Optional[X]``, ``X | None``).
Any other annotation (a class, a callable, a protocol...) is not judged: the value passes as before.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import sys
import types
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .errors import Problem, quote, type_name
from .masking import MASK

_SCALARS = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    bool: ("true or false", "booleans"),
    type(None): ("null", "nulls"),
    dict: ("an object", "objects"),
}
_MAPPINGS = (dict, typing.Dict, collections.abc.Mapping, collections.abc.MutableMapping)
# A JSON list is what a config can give for each of these; a string is refused even where it would iterate.
_SEQUENCES = (
    list, tuple, set, frozenset,
    collections.abc.Sequence, collections.abc.MutableSequence, collections.abc.Collection,
    collections.abc.Iterable, collections.abc.Set, collections.abc.MutableSet,
)
# What a config file's values can be (JSON, YAML, TOML), and the collections Python callers of wrap() pass.
_COLLECTIONS = (list, tuple, set, frozenset)
_CONFIG_TYPES = (str, int, float, bool, type(None), dict) + _COLLECTIONS
_UNION_TYPES: Tuple[Any, ...] = (Union, types.UnionType) if sys.version_info >= (3, 10) else (Union,)


@dataclasses.dataclass(frozen=True)
class Scalar:
    kind: type


@dataclasses.dataclass(frozen=True)
class OneOf:
    values: Tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Items:
    item: Optional["Expect"]  # None: the items are not judged (a bare ``list``)
    item_written: str = ""  # the items' annotation, as an error shows it


@dataclasses.dataclass(frozen=True)
class AnyOf:
    options: Tuple["Expect", ...]


Expect = Union[Scalar, OneOf, Items, AnyOf]


def check_args(factory: Callable[..., Any], params: List[inspect.Parameter], args: Dict[str, Any],
               shown: Dict[str, Any], loc: str, problems: List[Problem]) -> None:
    """Add a problem for each value in ``args`` that its parameter's simple annotation refuses."""
    hints = _type_hints(factory)
    for param in params:
        if param.name not in args or param.annotation is param.empty:
            continue
        annotation = hints.get(param.name, param.annotation)
        if isinstance(annotation, str):
            annotation = _evaluate(annotation, _globals_of(factory))
        expect = expectation(annotation)
        if expect is None:
            continue
        if param.default is None:  # "x: int = None" still means None is fine
            expect = any_of([expect, Scalar(type(None))])
        written = param.annotation if isinstance(param.annotation, str) else render(annotation)
        for where, message in _refusals(args[param.name], shown.get(param.name), expect, written):
            problems.append(Problem(f"{loc}.args.{param.name}{where}", message))


def expectation(annotation: Any) -> Optional[Expect]:
    """What a simple annotation accepts, or None when the annotation is not one this module judges."""
    if annotation is None or annotation is type(None):
        return Scalar(type(None))
    if isinstance(annotation, type) and annotation in _SCALARS:
        return Scalar(annotation)
    if annotation in _MAPPINGS:
        return Scalar(dict)
    if annotation in _SEQUENCES:
        return Items(None)
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in _UNION_TYPES:
        options = [expectation(argument) for argument in arguments]
        return None if any(option is None for option in options) else any_of(options)  # type: ignore[arg-type]
    if origin is typing.Literal:
        simple = all(value is None or type(value) in (int, str, bool) for value in arguments)
        return OneOf(tuple(arguments)) if simple else None
    if origin in _MAPPINGS:
        return Scalar(dict)
    if origin in _SEQUENCES:
        if origin is tuple and not (len(arguments) == 2 and arguments[1] is Ellipsis):
            return None  # a fixed-length tuple: not judged
        if not arguments:
            return Items(None)
        item = expectation(arguments[0])
        return Items(item, render(arguments[0])) if item is not None else None
    return None


def any_of(options: List[Expect]) -> Expect:
    """One flat union of ``options``, each once: ``Optional[Optional[X]]`` is ``X | None``."""
    flat: List[Expect] = []
    for option in options:
        for inner in option.options if isinstance(option, AnyOf) else (option,):
            if inner not in flat:
                flat.append(inner)
    return flat[0] if len(flat) == 1 else AnyOf(tuple(flat))


def describe(expect: Expect, plural: bool = False) -> str:
    """The expectation in words, as a config author reads it: "a list of strings or null"."""
    if isinstance(expect, Scalar):
        return _SCALARS[expect.kind][1 if plural else 0]
    if isinstance(expect, OneOf):
        return "one of " + ", ".join(_json(value) for value in expect.values)
    if isinstance(expect, Items):
        if expect.item is None:
            return "lists" if plural else "a list"
        if isinstance(expect.item, Scalar):
            return ("lists of " if plural else "a list of ") + describe(expect.item, plural=True)
        return ("lists" if plural else "a list") + f" whose items are each {describe(expect.item)}"
    nulls = [option for option in expect.options if option == Scalar(type(None))]
    others = [option for option in expect.options if option != Scalar(type(None))]
    return " or ".join(describe(option, plural) for option in others + nulls[:1])


def render(annotation: Any) -> str:
    """An evaluated annotation written back the way a signature shows it: ``Sequence[str] | None``."""
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is Ellipsis:
        return "..."
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in _UNION_TYPES:
        return " | ".join(render(argument) for argument in arguments)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(argument) for argument in arguments) + "]"
    if origin is not None:
        name = getattr(annotation, "_name", None) or getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(render(argument) for argument in arguments)}]" if arguments else name
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _refusals(value: Any, shown: Any, expect: Expect, written: str) -> List[Tuple[str, str]]:
    """(location suffix, message) for each way ``value`` fails ``expect``; empty when it is accepted."""
    if not isinstance(value, _CONFIG_TYPES):
        return []  # an object given from Python (a Path, a tracer...): no config file holds one, so not judged
    if isinstance(expect, AnyOf):
        if any(not _refusals(value, shown, option, written) for option in expect.options):
            return []
        # A list meets its one list option: say which item is wrong rather than "expected a list".
        lists = [option for option in expect.options if isinstance(option, Items)]
        if isinstance(value, list) and len(lists) == 1:
            return _refusals(value, shown, lists[0], written)
    elif isinstance(expect, Items) and isinstance(value, _COLLECTIONS):
        if expect.item is None:
            return []
        found = []
        for position, item in enumerate(value):
            item_shown = shown[position] if isinstance(shown, list) and position < len(shown) else MASK
            for where, message in _refusals(item, item_shown, expect.item, expect.item_written):
                found.append((f"[{position}]{where}", message))
        return found
    elif _accepts(value, expect):
        return []
    return [("", f"expected {describe(expect)} ({written}), got {_got(value, shown)}")]


def _accepts(value: Any, expect: Expect) -> bool:
    if isinstance(expect, OneOf):
        return any(type(value) is type(option) and value == option for option in expect.values)
    if isinstance(expect, Items):
        return isinstance(value, _COLLECTIONS)
    kind = expect.kind  # type: ignore[union-attr]
    if kind is float:
        return type(value) in (int, float)  # an int is a fine float; True is not
    if kind is dict:
        return isinstance(value, dict)
    return type(value) is kind  # bool is a subclass of int, but True is no integer here


def _got(value: Any, shown: Any) -> str:
    if shown == MASK:
        return f"{type_name(value)} (not shown: it may be a secret)"
    return f"{quote(value)} ({type_name(value)})"


def _json(value: Any) -> str:
    """A Literal's value as the config writes it."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return quote(value)


def _type_hints(factory: Callable[..., Any]) -> Dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    try:
        return typing.get_type_hints(target)
    except Exception:  # one name it cannot resolve spoils them all: evaluate each on its own instead
        return {}


def _globals_of(factory: Callable[..., Any]) -> Dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    module = sys.modules.get(getattr(factory, "__module__", "") or "")
    return getattr(target, "__globals__", None) or (vars(module) if module else {})


# Names a string annotation may use that its module imports only for type checkers.
_TYPING_NAMES = {name: getattr(typing, name) for name in typing.__all__}


def _evaluate(text: str, namespace: Dict[str, Any]) -> Any:
    """A string annotation's value, or None when it cannot be known here (then it is not judged).

    ``X | None`` is split and evaluated part by part, since Python 3.9 cannot evaluate it.
    """
    parts = _split_union(text)
    values = []
    for part in parts:
        try:
            values.append(eval(part, {**_TYPING_NAMES, **namespace}))  # noqa: S307 - the middleware's own annotation
        except Exception:
            return object  # not judged
    if len(values) == 1:
        return values[0]
    return Union[tuple(values)]  # type: ignore[return-value]


def _split_union(text: str) -> List[str]:
    parts, depth, start = [], 0, 0
    for position, char in enumerate(text):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(text[start:position].strip())
            start = position + 1
    parts.append(text[start:].strip())
    return parts
