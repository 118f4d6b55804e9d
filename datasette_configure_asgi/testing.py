"""A conformance kit for middleware authors: does a middleware follow the ``klass(app, **args)`` protocol?

Use it in your own tests::

    from datasette_configure_asgi.testing import check_middleware

    def test_my_middleware_follows_the_protocol():
        check_middleware(MyMiddleware, option="value")

It raises ``MiddlewareCheckFailed`` (an AssertionError) naming each property that does not hold.
"""
from __future__ import annotations

import _thread
import asyncio
import sys
import threading
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

Message = Dict[str, Any]


class MiddlewareCheckFailed(AssertionError):
    """One or more protocol properties do not hold; the message lists each."""


class _InnerError(Exception):
    """Raised by the inner app; the middleware must let it through unchanged."""


def check_middleware(
    factory: Callable[..., Any],
    *,
    changes_headers: Iterable[Union[str, bytes]] = (),
    changes_body: bool = False,
    request_headers: Sequence[Tuple[bytes, bytes]] = (),
    scope: Optional[Mapping[str, Any]] = None,
    timeout: float = 5.0,
    **args: Any,
) -> None:
    """Check that ``factory(app, **args)`` behaves as a well-mannered ASGI middleware.

    - constructing it twice starts no threads (``__init__`` is cheap and may run several times);
    - lifespan startup and shutdown reach the app, and the app's replies reach the server;
    - a websocket session passes through: accept, messages both ways, close;
    - an HTTP response is unchanged, except the headers named in ``changes_headers``
      (or the body too, when ``changes_body`` is true), streaming included;
    - an exception raised by the app propagates to the server.

    The requests must be ones the middleware lets through to the app: ``request_headers`` are sent
    with each (a ``host`` given here replaces the kit's ``testserver``), and ``scope`` adds or replaces
    keys of the http and websocket scopes (``{"scheme": "https"}`` is ``wss`` for the websocket).

    Callable from sync code and from inside a running event loop.
    """
    changed = {(h.encode("latin-1") if isinstance(h, str) else h).lower() for h in changes_headers}
    checks = _Checks(factory, args, changed, changes_body, list(request_headers), dict(scope or {}), timeout)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        failures = asyncio.run(checks.run_all())
    else:
        # Called from async code: run on a fresh loop in a helper thread.
        result: List[Any] = []
        worker = threading.Thread(target=lambda: result.append(asyncio.run(checks.run_all())))
        worker.start()
        worker.join()
        failures = result[0] if result else ["the checks did not finish"]
    if failures:
        name = getattr(factory, "__qualname__", repr(factory))
        raise MiddlewareCheckFailed(
            f"{name} does not follow the middleware protocol:\n" + "\n".join(f"  - {f}" for f in failures)
        )


# Said once, after the failures, when the middleware answered a request itself.
LET_THROUGH_HINT = (
    "hint: the kit checks what a middleware does to requests it passes on, so send one it lets through: "
    'for a redirect to https pass scope={"scheme": "https"}, for a host check '
    'request_headers=[(b"host", b"<an allowed host>")]'
)


class _Checks:
    def __init__(self, factory, args, changes_headers, changes_body, request_headers, scope, timeout):
        self.factory = factory
        self.args = args
        self.changes_headers = changes_headers
        self.changes_body = changes_body
        self.request_headers = request_headers
        self.scope = scope
        self.timeout = timeout
        self.answered_itself = False

    def build(self, app):
        return self.factory(app, **self.args)

    def request_scope(self, kind: str, path: str) -> Dict[str, Any]:
        scope = _scope(kind, path, self.request_headers)
        scope.update(self.scope)
        if kind == "websocket" and "scheme" in self.scope:
            scope["scheme"] = {"https": "wss", "http": "ws"}.get(self.scope["scheme"], self.scope["scheme"])
        return scope

    def answered(self, check: str, sent: List[Message]) -> str:
        """The failure of a check whose request the middleware answered without calling the app."""
        self.answered_itself = True
        status, headers, _ = _response(sent)
        location = dict(headers).get(b"location")
        what = f"answered {status}" if status is not None else "answered"
        if location:
            what += f" (location {location.decode('latin-1')})"
        return f"{check}: the middleware {what} itself instead of calling the app"

    async def run_all(self) -> List[str]:
        failures: List[str] = []
        for check in (self.cheap_init, self.lifespan, self.websocket, self.http_unchanged, self.exceptions):
            try:
                problem = await asyncio.wait_for(check(), self.timeout)
            except asyncio.TimeoutError:
                problem = f"{check.__name__}: no answer within {self.timeout} s"
            except Exception as error:
                problem = f"{check.__name__}: raised {type(error).__name__}: {error}"
            if problem:
                failures.append(problem)
        if self.answered_itself:
            failures.append(LET_THROUGH_HINT)
        return failures

    async def cheap_init(self) -> Optional[str]:
        started = _threads_started_by(lambda: (self.build(_echo_app), self.build(_echo_app)))
        if started:
            return (
                f"cheap_init: constructing the middleware twice started {len(started)} thread(s) "
                f"({', '.join(started)}); start shared resources lazily, once per process"
            )
        return None

    async def lifespan(self) -> Optional[str]:
        seen: List[str] = []

        async def app(scope, receive, send):
            assert scope["type"] == "lifespan"
            while True:
                message = await receive()
                seen.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

        sent = await _talk(
            self.build(app),
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
            [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
        )
        replies = [m["type"] for m in sent]
        if seen != ["lifespan.startup", "lifespan.shutdown"] or replies != [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]:
            return f"lifespan: the app received {seen} and the server received {replies}; both should pass through untouched"
        return None

    async def websocket(self) -> Optional[str]:
        reached = []

        async def app(scope, receive, send):
            reached.append(True)
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send", "text": "echo:" + message.get("text", "")})
            await send({"type": "websocket.close", "code": 1000})

        sent = await _talk(
            self.build(app),
            self.request_scope("websocket", "/ws"),
            [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"}],
        )
        if not reached:
            return self.answered("websocket", sent)
        expected = [
            {"type": "websocket.accept"},
            {"type": "websocket.send", "text": "echo:hi"},
            {"type": "websocket.close", "code": 1000},
        ]
        if [_strip(m) for m in sent] != expected:
            return f"websocket: the server received {sent}, expected {expected}"
        return None

    async def http_unchanged(self) -> Optional[str]:
        headers = [(b"content-type", b"text/plain"), (b"x-check", b"kept")]
        chunks = [b"first,", b"second,", b"last"]

        reached = []

        async def app(scope, receive, send):
            reached.append(True)
            await receive()
            await send({"type": "http.response.start", "status": 418, "headers": headers})
            for i, chunk in enumerate(chunks):
                await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})

        direct = await _talk(app, self.request_scope("http", "/check"), [_request()])
        reached.clear()
        wrapped = await _talk(self.build(app), self.request_scope("http", "/check"), [_request()])
        if not reached:
            return self.answered("http_unchanged", wrapped)
        status_a, headers_a, body_a = _response(direct)
        status_b, headers_b, body_b = _response(wrapped)
        problems = []
        if status_a != status_b:
            problems.append(f"status {status_a} became {status_b}")
        kept_a = [h for h in headers_a if h[0].lower() not in self.changes_headers]
        kept_b = [h for h in headers_b if h[0].lower() not in self.changes_headers]
        if kept_a != kept_b:
            problems.append(f"headers {kept_a} became {kept_b}")
        if body_a != body_b and not self.changes_body:
            problems.append(f"body {body_a!r} became {body_b!r}")
        if problems:
            return "http_unchanged: " + "; ".join(problems) + " (pass changes_headers=... or changes_body=True if that is the point)"
        return None

    async def exceptions(self) -> Optional[str]:
        reached = []

        async def app(scope, receive, send):
            reached.append(True)
            raise _InnerError("raised by the app")

        try:
            sent = await _talk(self.build(app), self.request_scope("http", "/raise"), [_request()])
        except _InnerError:
            return None
        except Exception as error:
            return f"exceptions: the app's exception became {type(error).__name__}: {error}"
        if not reached:
            return self.answered("exceptions", sent)
        return "exceptions: the app raised, but the middleware swallowed the exception"


# What every thread start goes through (threading.Thread.start included): start_joinable_thread from 3.13.
_THREAD_STARTERS = tuple(getattr(_thread, name) for name in ("start_new_thread", "start_joinable_thread") if hasattr(_thread, name))


def _threads_started_by(function: Callable[[], Any]) -> List[str]:
    """Call ``function`` and name the threads it started in this thread.

    Watching the calls (a profile hook, which sees only this thread) rather than counting the
    threads alive before and after keeps threads that other code starts or ends meanwhile out of the verdict.
    """
    started: List[str] = []

    def watch(frame, event, arg):
        if event == "c_call" and any(arg is starter for starter in _THREAD_STARTERS):
            thread = frame.f_locals.get("self")
            started.append(thread.name if isinstance(thread, threading.Thread) else "a raw _thread")

    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        function()
    finally:
        sys.setprofile(previous)
    return started


async def _echo_app(scope, receive, send):  # pragma: no cover - only constructed around
    pass


def _scope(kind: str, path: str, headers: Sequence[Tuple[bytes, bytes]]) -> Dict[str, Any]:
    scope: Dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [*([] if any(name.lower() == b"host" for name, _ in headers) else [(b"host", b"testserver")]), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    if kind == "http":
        scope["method"] = "GET"
    return scope


def _request() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _strip(message: Message) -> Message:
    """Drop optional keys that carry no meaning when absent or empty."""
    return {k: v for k, v in message.items() if not (k in ("headers", "subprotocol", "reason", "bytes") and not v)}


def _response(sent: List[Message]):
    status, headers, body = None, [], b""
    for message in sent:
        if message["type"] in ("http.response.start", "websocket.http.response.start"):
            status = message["status"]
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] in ("http.response.body", "websocket.http.response.body"):
            body += message.get("body", b"")
    return status, headers, body


async def _talk(app, scope: Dict[str, Any], incoming: List[Message]) -> List[Message]:
    """Run ``app`` with these incoming messages; return what it sent. After the last one, receive waits."""
    queue: "asyncio.Queue[Message]" = asyncio.Queue()
    for message in incoming:
        queue.put_nowait(message)
    sent: List[Message] = []

    async def receive():
        return await queue.get()

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent
