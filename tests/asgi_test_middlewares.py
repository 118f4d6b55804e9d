"""Small real middlewares and factories that the tests configure by import path.

Importable as ``asgi_test_middlewares`` in-process (pytest puts tests/ on sys.path) and in the
datasette/uvicorn subprocesses the tests start (they get tests/ on PYTHONPATH).
"""
import threading
from typing import Callable, Literal, Optional, Sequence

CONSTRUCTED = {"count": 0}


class AppendHeader:
    """Append one response header: a real middleware whose effect shows its place in the chain."""

    def __init__(self, app, name="x-order", value="?"):
        self.app = app
        self.header = (name.encode("latin-1"), value.encode("latin-1"))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), self.header])
            await send(message)

        await self.app(scope, receive, send_with_header)


def append_header_entries(*values, **options):
    """A config of AppendHeader entries, one per value, in order: each adds an x-order header with its value."""
    return [{"class": "asgi_test_middlewares.AppendHeader", "args": {"value": value}, **options} for value in values]


class Counting(AppendHeader):
    """AppendHeader that counts its constructions, to show what a rebuild costs."""

    def __init__(self, app, **kwargs):
        CONSTRUCTED["count"] += 1
        super().__init__(app, **kwargs)


class NeedsFile:
    def __init__(self, app, file, *, batch_size=100):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


class LifespanUnsafe:
    """Reads scope["method"] for every scope, like the 0.1 logger: crashes on lifespan."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        scope["method"].upper()
        await self.app(scope, receive, send)


class TakesNoApp:
    def __init__(self):
        pass


class StartsThread:
    """Starts a thread in __init__: what check_middleware must catch."""

    def __init__(self, app):
        self.app = app
        self.stop = threading.Event()
        threading.Thread(target=self.stop.wait, args=(0.5,), daemon=True).start()

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


class SwallowsErrors:
    """Hides the app's exceptions behind a 500: what check_middleware must catch."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        try:
            await self.app(scope, receive, send)
        except Exception:
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 500, "headers": []})
                await send({"type": "http.response.body", "body": b"error"})


def returns_none(app):
    app.wrapped = True  # forgot the return


def returns_class(app):
    class OldStyle:
        def __init__(self, scope):
            self.scope = scope

        async def __call__(self, receive, send):
            pass

    return OldStyle


def returns_single_callable(app):
    def old_style(scope):
        async def instance(receive, send):
            pass

        return instance

    return old_style


def returns_two_argument_callable(app):
    async def missing_send(scope, receive):
        pass

    return missing_send


def returns_four_argument_callable(app):
    async def extra_argument(scope, receive, send, extra):
        pass

    return extra_argument


def returns_callable_needing_a_keyword(app):
    async def needs_flag(scope, receive, send, *, flag):
        pass

    return needs_flag


def returns_number(app):
    return 42


def raises_on_construction(app, message="boom"):
    raise RuntimeError(message)


NOT_CALLABLE = {"this": "is a dict"}


class AcceptsAnything:
    """Takes any keyword options, like many real middlewares."""

    def __init__(self, app, **options):
        self.app = app
        self.options = options

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


class Annotated(AcceptsAnything):
    """Annotated options of every simple kind, one complex and one without an annotation."""

    def __init__(
        self,
        app,
        *,
        size: int = 1,
        ratio: float = 0.5,
        name: str = "",
        flag: bool = False,
        hosts: Sequence[str] = (),
        label: Optional[str] = "x",
        mode: Literal["fast", "slow"] = "fast",
        limit: int = None,
        callback: Callable[[str], str] = str,
        untyped="anything",
    ):
        super().__init__(app)
