"""A small Starlette app, served wrapped in middleware.yaml:

    python -m datasette_configure_asgi serve examples.starlette.app:app --config examples/starlette/middleware.yaml
"""
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute


async def homepage(request):
    return PlainTextResponse("hello from starlette " + "x" * 2000)


async def item(request):
    return JSONResponse({"id": request.path_params["id"], "headers_seen": dict(request.headers)})


async def echo(websocket):
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text("echo:" + text)
    await websocket.close()


app = Starlette(
    routes=[Route("/", homepage), Route("/items/{id}", item), WebSocketRoute("/ws", echo)]
)
