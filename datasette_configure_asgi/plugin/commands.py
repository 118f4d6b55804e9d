"""`datasette configure-asgi check`: validate the plugin config the way `datasette serve` reads it, without serving."""
from __future__ import annotations

import click
from datasette import utils as datasette_utils
from datasette.utils import parse_metadata

from .. import PLUGIN_KEY
from ..describe import chain_text
from .state import DATASETTE_MAJOR, configured_chain, exit_on_config_error


@click.group(name="configure-asgi")
def configure_asgi():
    """Inspect the middleware configured under datasette-configure-asgi."""


@configure_asgi.command()
@click.option("-m", "--metadata", type=click.File(mode="r"), help="Metadata file, as given to datasette serve")
@click.option("-c", "--config", type=click.File(mode="r"), help="datasette.yaml, as given to datasette serve (1.0)")
@click.option(
    "-s",
    "--setting",
    "settings",
    type=(str, str),
    multiple=True,
    help="nested.key value, as given to datasette serve (1.0)",
)
def check(metadata, config, settings):
    """Check the middleware config and print the chain, outermost first.

    Exits 0 when every entry is usable, 1 with every problem listed otherwise.

    Example: datasette configure-asgi check -c datasette.yaml
    """
    # datasette.app imports every plugin while it loads: imported at module top from here, it
    # fails half-initialised, or (when this plugin is imported first) registers no hooks at all.
    from datasette.app import Datasette

    metadata_data = parse_metadata(metadata.read()) if metadata else None
    if DATASETTE_MAJOR < 1:
        if config or settings:
            raise click.ClickException(
                "-c and -s set plugin config only on Datasette 1.0; on this Datasette "
                f"put {PLUGIN_KEY} under \"plugins\" in the metadata file given with -m"
            )
        datasette = Datasette([], metadata=metadata_data)
    else:
        datasette = Datasette([], metadata=metadata_data, config=_config_1x(config, settings))
    found, chain = configured_chain(datasette)
    if chain is not None:
        exit_on_config_error(chain.check)
    click.echo(chain_text(chain, found.source, PLUGIN_KEY))


def _config_1x(config, settings) -> dict:
    """-c and -s merged as Datasette 1.0's serve merges them (these helpers exist only on 1.0)."""
    config_data = (parse_metadata(config.read()) if config else None) or {}
    if settings:
        datasette_utils.deep_dict_update(config_data, datasette_utils.pairs_to_nested_config(list(settings)))
    return config_data
