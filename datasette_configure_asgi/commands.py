"""`datasette configure-asgi check`: validate the plugin config the way `datasette serve` reads it, without serving."""
from __future__ import annotations

import click

from . import PLUGIN_KEY
from .describe import chain_text


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
    """
    from datasette.app import Datasette
    from datasette.utils import parse_metadata

    from .plugin import _exit_on_config_error, configured_chain
    from .sources import datasette_major

    metadata_data = parse_metadata(metadata.read()) if metadata else None
    if datasette_major() < 1:
        if config or settings:
            raise click.ClickException(
                "-c and -s set plugin config only on Datasette 1.0; on this Datasette "
                f"put {PLUGIN_KEY} under \"plugins\" in the metadata file given with -m"
            )
        datasette = Datasette([], metadata=metadata_data)
    else:
        from datasette.utils import deep_dict_update, pairs_to_nested_config

        config_data = (parse_metadata(config.read()) if config else None) or {}
        if settings:
            deep_dict_update(config_data, pairs_to_nested_config(list(settings)))
        datasette = Datasette([], metadata=metadata_data, config=config_data)
    found, chain = configured_chain(datasette)
    if chain is not None:
        _exit_on_config_error(chain.check)
    click.echo(chain_text(chain, found.source, PLUGIN_KEY))
