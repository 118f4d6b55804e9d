"""Logs of every kind a user brings to Datasette: written by the middleware in front of the
repository's example apps, Starlette (route templates in scope["route"]) and Django (paths only),
and imported from an nginx access log."""
import asyncio
import datetime
import os
import time
from unittest import mock

import httpx

from asgi_log_to_sqlite import AsgiLogToSqlite

from conftest import run

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
DAY_S = 86_400
# Per framework: its app (imported when asked for), the host it accepts, and the paths to ask for.
FRAMEWORKS = {
    "starlette": ("examples.starlette.app:app", "http://localhost", ["/", "/items/1", "/items/2", "/items/3", "/nope"]),
    "django": ("examples.django_site.asgi:application", "http://localhost", ["/hello/", "/hello/", "/missing/page"]),
}


def example_app(name: str):
    target, _, _ = FRAMEWORKS[name]
    module, attribute = target.split(":")
    if name == "django":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_site.settings")
    return getattr(__import__(module, fromlist=[attribute]), attribute)


async def _send(file, name: str, rounds: int) -> None:
    _, origin, paths = FRAMEWORKS[name]
    logged = AsgiLogToSqlite(example_app(name), str(file))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=logged), base_url=origin) as client:
        for n in range(rounds):
            for path in paths:
                headers = {"user-agent": BOT if n % 4 == 0 else FIREFOX,
                           **({"referer": f"https://search.example.com/?q={n}"} if n % 2 else {})}
                await client.get(path, headers=headers)
    assert logged.close()


def framework_log(file, name: str) -> str:
    """``file`` filled through the example app ``name``: traffic three days ago and now, bots,
    errors (each app's 404) and referrers."""
    real = time.time
    with mock.patch("time.time", lambda: real() - 3 * DAY_S):
        asyncio.run(_send(file, name, 8))
    asyncio.run(_send(file, name, 12))
    return str(file)


def imported_log(folder):
    """A log imported from an nginx access log of the last few days (its rows have no durations)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = []
    for n in range(200):
        moment = now - datetime.timedelta(minutes=37 * n)
        path, status = [("/", 200), ("/about", 200), ("/blog/1", 200), ("/missing", 404), ("/api/x", 500)][n % 5]
        agent = FIREFOX if n % 3 else "Googlebot/2.1 (+http://www.google.com/bot.html)"
        lines.append(f'10.0.0.{n % 40} - - [{moment:%d/%b/%Y:%H:%M:%S +0000}] "GET {path} HTTP/1.1" {status} '
                     f'{100 + n} "https://search.example.com/?q={n % 7}" "{agent}"')
    access = folder / "access.log"
    access.write_text("\n".join(lines) + "\n")
    target = folder / "nginx.db"
    done = run("asgi-log-to-sqlite", "import", target, access)
    assert done.returncode == 0, done.stdout + done.stderr
    return str(target)
