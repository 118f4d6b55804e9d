"""/-/asgi-middleware(.json): the resolved chain, outermost first, with secrets masked."""
from __future__ import annotations

from datasette.utils.asgi import Response

from .describe import chain_rows


async def _ensure_view_instance(datasette, request) -> None:
    if hasattr(datasette, "ensure_permission"):  # Datasette 1.0
        await datasette.ensure_permission(action="view-instance", actor=request.actor)
    else:  # Datasette 0.65
        await datasette.ensure_permissions(request.actor, ["view-instance"])


async def middleware_page(datasette, request):
    from .plugin import configured_chain

    await _ensure_view_instance(datasette, request)
    found, chain = configured_chain(datasette)
    data = chain_rows(chain, found.source)
    if request.url_vars.get("format") == ".json":
        return Response.json(data)
    return Response.html(
        await datasette.render_template(
            "asgi_middleware.html", {"chain": data}, request=request
        )
    )
