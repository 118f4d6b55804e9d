"""The config each Datasette instance was given: where it came from and its checked chain, kept per instance.

The hooks, the page and the command all ask for it here, so the config is read and resolved once per
instance. Imports nothing from the rest of ``plugin/``.

Datasette 0.65 reads plugin config from metadata (``-m``). The 1.0 alphas read it from config
(``-c datasette.yaml`` and ``-s``), and silently move a ``plugins`` block found in metadata into
config, where it replaces the whole ``plugins`` block given with ``-c``/``-s``. We cannot undo that,
but we can say so: the options of the running command (``serve`` or ``configure-asgi check``) are
re-read to tell where the config came from and to warn when both places set it.
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

import click
from datasette.utils import parse_metadata
from datasette.version import __version__ as DATASETTE_VERSION

from .. import PLUGIN_KEY
from ..chain import Chain, chain_for
from ..errors import ConfigError

DATASETTE_MAJOR = int(DATASETTE_VERSION.split(".")[0])

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Found:
    raw: Any  # the list as written, before $env/$file are resolved; None when not configured
    source: str  # where it came from, for humans: "metadata.json (-m)", "datasette.yaml (-c)", ...
    warning: Optional[str] = None


# Datasette instance -> (what was found, its chain). Looked up on every app() build.
_per_instance: "weakref.WeakKeyDictionary[Any, Tuple[Found, Optional[Chain]]]" = weakref.WeakKeyDictionary()


def configured_chain(datasette) -> Tuple[Found, Optional[Chain]]:
    """The config of this instance and its resolved chain (None when nothing is configured).

    Raises click.ClickException, so that ``datasette serve`` and ``--get`` print ``Error: ...``
    and exit 1 instead of showing a traceback.
    """
    known = _per_instance.get(datasette)
    if known is not None:
        return known
    found = find_config(datasette)
    if found.warning:
        click.echo(f"Warning: {found.warning}", err=True)
    chain = None
    if found.raw is not None:
        chain = exit_on_config_error(chain_for, found.raw, PLUGIN_KEY)
    _per_instance[datasette] = (found, chain)
    return found, chain


def exit_on_config_error(function: Callable[..., T], *args: Any) -> T:
    """Turn a ConfigError into click's one-line "Error: ..." and exit 1, as datasette's own errors do."""
    try:
        return function(*args)
    except ConfigError as error:
        raise click.ClickException(error.format()) from None


def find_config(datasette) -> Found:
    """Return the raw plugin config of ``datasette`` and where it came from."""
    if DATASETTE_MAJOR < 1:
        raw = (datasette.metadata("plugins") or {}).get(PLUGIN_KEY)
    else:
        raw = ((getattr(datasette, "config", None) or {}).get("plugins") or {}).get(PLUGIN_KEY)
    options = _command_options()
    if options is None:
        return Found(raw, "metadata" if DATASETTE_MAJOR < 1 else "config")
    return _locate(raw, options)


def _command_options() -> Optional[Dict[str, Any]]:
    """The -m/-c/-s options of the datasette command running now, if any."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or not {"metadata"} & set(ctx.params):
        return None
    return ctx.params


def _file_plugins(file_param: Any) -> Optional[Dict[str, Any]]:
    """Re-read a -m/-c file given to the command and return its top-level plugins block."""
    name = getattr(file_param, "name", None)
    if not name or name == "-" or name.startswith("<"):
        return None
    try:
        with open(name, encoding="utf-8") as fp:
            data = parse_metadata(fp.read()) or {}
    except Exception:
        return None
    plugins = data.get("plugins") if isinstance(data, dict) else None
    return plugins if isinstance(plugins, dict) else {}


def _label(file_param: Any, flag: str) -> str:
    return f"{getattr(file_param, 'name', '?')} ({flag})"


def _locate(raw: Any, options: Dict[str, Any]) -> Found:
    metadata_param = options.get("metadata")
    config_param = options.get("config")
    settings = options.get("settings") or ()
    in_metadata = PLUGIN_KEY in (_file_plugins(metadata_param) or {}) if metadata_param else False
    if DATASETTE_MAJOR < 1:
        return Found(raw, _label(metadata_param, "-m") if in_metadata else "metadata")
    in_config = PLUGIN_KEY in (_file_plugins(config_param) or {}) if config_param else False
    prefix = f"plugins.{PLUGIN_KEY}"
    setting_names = [name for name, _ in settings if name == prefix or name.startswith(prefix + ".")]
    others = []
    if setting_names:
        others.append(f"-s {setting_names[0]}")
    if in_config:
        others.append(_label(config_param, "-c"))
    if in_metadata:
        source = _label(metadata_param, "-m")
        warning = None
        if others:
            warning = (
                f"{PLUGIN_KEY} is set in both {source} and {' and '.join(others)}. "
                f"Datasette 1.0 moves plugin settings out of metadata into config, so the one in "
                f"{source} wins and the whole plugins block from -c/-s is replaced. "
                f"Keep plugin settings in datasette.yaml (-c) only."
            )
        return Found(raw, source, warning)
    if setting_names:
        return Found(raw, f"-s {setting_names[0]}")
    if in_config:
        return Found(raw, _label(config_param, "-c"))
    return Found(raw, "config")
