"""/-/asgi-middleware(.json): the resolved chain, outermost first, with secrets masked."""
from __future__ import annotations

from datasette.utils.asgi import Response

from ..describe import chain_rows
from .state import DATASETTE_MAJOR, configured_chain

ROUTE = r"^/-/asgi-middleware(?P<format>\.json)?$"


async def ensure_view_instance(datasette, request) -> None:
    """Refuse the page to whoever may not view the instance, with each line's own permission call."""
    if DATASETTE_MAJOR >= 1:
        await datasette.ensure_permission(action="view-instance", actor=request.actor)
    else:
        await datasette.ensure_permissions(request.actor, ["view-instance"])


async def middleware_page(datasette, request):
    await ensure_view_instance(datasette, request)
    found, chain = configured_chain(datasette)
    data = chain_rows(chain, found.source)
    if request.url_vars.get("format") == ".json":
        return Response.json(data)
    return Response.html(
        await datasette.render_template(
            "asgi_middleware.html", {"chain": data}, request=request
        )
    )
