"""Varied, bounded demo traffic, sent over HTTP to a server on this machine only.

    python -m asgi_log_to_sqlite.traffic http://127.0.0.1:8001 --requests 300 --seconds 60
    python -m asgi_log_to_sqlite.traffic http://127.0.0.1:8001 --requests 300 --seconds 60 \\
        --log requests.db --past-requests 3000 --past-days 30

Requests mix pages, table views, JSON, CSV, SQL (a bad query answers 400), missing pages (404), and
a few HEADs and POSTs (405),
from browsers, bots (Googlebot, Bingbot, ...), curl and scripts, with referrers from search engines,
social sites and the site itself. Each comes from one of a few hundred visitors, at addresses no one
is given (198.18.0.0/15, 2001:db8::/32), sent as X-Forwarded-For, which uvicorn believes from 127.0.0.1.

Live requests all happen now. A log cannot be sent requests in the past, so ``--log`` adds the past
days the honest way a log gets them: as an access log (combined format, with nginx's request time)
imported by asgi_log_to_sqlite.importer, as a site's nginx logs would be. Every past request's
status, size and duration are those the server gave a live request for the same URL in this run,
and its row carries the imported flag (256).

Bounded: at most ``--requests`` requests and ``--seconds`` seconds, to 127.0.0.1, localhost or ::1.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import http.client
import math
import os
import random
import sys
import tempfile
import time
import sqlite3
import urllib.parse
from typing import Dict, List, Optional, Sequence, Tuple

from .accesslog import LogError
from .importer import Importer

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DAY_S = 86_400
MAX_REDIRECTS = 3

# (target, weight): the pages of the Datasette demo (examples/datasette), the way people and bots hit them.
# A target is GET unless it starts with another method.
DEMO_TARGETS: Tuple[Tuple[str, int], ...] = (
    ("/", 30),
    ("/demo", 25),
    ("/demo/numbers", 40),
    ("/demo/numbers?_sort_desc=square", 8),
    ("/demo/numbers?n__gt=400", 6),
    ("/demo/numbers?_search=7&_size=20", 3),
    ("/demo/numbers.json", 25),
    ("/demo/numbers.json?_shape=array&_size=100", 12),
    ("/demo/numbers.csv", 8),
    ("/demo/numbers.csv?_size=max", 3),
    ("/demo/numbers/42", 6),
    ("/demo/numbers/7.json", 4),
    ("/demo/middleware", 20),
    ("/demo/middleware.json", 10),
    ("/demo/middleware/1", 4),
    ("/demo?sql=select+distribution%2C+count(*)+from+middleware+group+by+distribution", 6),
    ("/demo.json?sql=select+n%2C+square+from+numbers+where+n+%3C+10", 5),
    ("/demo?sql=selec+oops", 5),                             # 400: a typo in the SQL
    ("/-/versions", 3),
    ("/-/plugins.json", 3),
    ("/-/asgi-middleware", 5),
    ("/robots.txt", 6),                                      # 404: the demo has none
    ("/favicon.ico", 10),
    ("/demo/missing_table", 3),                              # 404
    ("/about", 2),                                           # 404
    ("/wp-login.php", 3),                                    # 404: the scanners' favourites
    ("/.env", 2),
    ("/admin", 2),
    ("POST /wp-login.php", 3),                               # 405: no form there
    ("HEAD /", 4),                                           # uptime monitors
    ("HEAD /demo/numbers.csv", 1),
)
# What a scanner's POST sends, so that the request has a body to count.
POST_BODY = b"log=admin&pwd=admin&wp-submit=Log+In"

# (agent, weight, is_bot): real user agents, people's browsers first.
AGENTS: Tuple[Tuple[str, int, bool], ...] = (
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", 30, False),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Safari/605.1.15", 14, False),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", 10, False),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Mobile/15E148 Safari/604.1", 12, False),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Mobile Safari/537.36", 9, False),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0", 6, False),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 9, True),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", 5, True),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", 3, True),
    ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", 2, True),
    ("curl/8.5.0", 4, True),
    ("python-requests/2.31.0", 3, True),
    ("Wget/1.21.4", 1, True),
)

# (referer, weight); "" sends none. "{site}" is the server's own address: a visitor following a link.
REFERERS: Tuple[Tuple[str, int], ...] = (
    ("", 45),
    ("{site}/", 14),
    ("{site}/demo", 10),
    ("{site}/demo/numbers", 6),
    ("https://www.google.com/", 12),
    ("https://www.bing.com/search?q=datasette+demo", 3),
    ("https://duckduckgo.com/", 4),
    ("https://news.ycombinator.com/item?id=21000000", 4),
    ("https://www.reddit.com/r/Python/", 3),
    ("https://t.co/datasette", 2),
    ("https://github.com/simonw/datasette", 4),
    ("https://simonwillison.net/2019/Dec/16/asgi-log-to-sqlite/", 3),
)

LANGUAGES = ("en-US,en;q=0.9", "en-GB,en;q=0.8", "de-DE,de;q=0.9,en;q=0.5", "fr-FR,fr;q=0.9", "ja,en;q=0.7", "")

# Hour of day (UTC) -> weight: quiet nights, a working-day peak.
_HOURLY = tuple(0.25 + math.sin(math.pi * max(0.0, hour - 6) / 17) ** 2 for hour in range(24))


class TrafficError(Exception):
    """A problem with what the generator was asked to do, said in one line."""


@dataclasses.dataclass(frozen=True)
class Visit:
    """One planned request: what to ask, as whom, from where, and (for the past only) when."""

    target: str
    agent: str
    referer: str
    address: str
    language: str
    when: Optional[float] = None
    method: str = "GET"

    @property
    def request(self) -> str:
        """``METHOD target``: what the answers of a run are kept under."""
        return f"{self.method} {self.target}"


@dataclasses.dataclass
class Answer:
    """What the server gave a live request: status, body bytes, and seconds until the last byte."""

    status: int
    size: int
    seconds: float
    redirect: Optional[str] = None  # the target a redirect to this same server points at


@dataclasses.dataclass
class Sent:
    """What a live run did: its answers per request (``METHOD target``), and how it ended."""

    answers: Dict[str, List[Answer]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    failed: int = 0
    timed_out: bool = False

    @property
    def count(self) -> int:
        return sum(self.statuses.values()) + self.failed


def loopback_url(url: str) -> urllib.parse.SplitResult:
    """``url`` split, once it is known to name a server on this machine; TrafficError otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TrafficError(f"{url!r}: expected a URL such as http://127.0.0.1:8001")
    if parts.hostname not in LOOPBACK:
        raise TrafficError(f"{url!r}: host {parts.hostname!r} is not this machine; the generator only sends to "
                           f"{', '.join(LOOPBACK)}")
    return parts


def visitors(rng: random.Random, count: int) -> List[Tuple[str, str, str]]:
    """``count`` visitors as (address, agent, language): one agent and language each, as a person keeps them.

    Addresses are of ranges no one is given: IPv4 198.18.0.0/15 (RFC 2544) and IPv6 2001:db8::/32
    (RFC 3849), in distinct /24 and /48 networks, so that the logger's truncation keeps them apart.
    """
    agents = [agent for agent, _, _ in AGENTS]
    weights = [weight for _, weight, _ in AGENTS]
    people = []
    for _ in range(count):
        if rng.random() < 0.8:
            address = f"198.{rng.randrange(18, 20)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        else:
            address = f"2001:db8:{rng.randrange(1, 0xFFFF):x}::{rng.randrange(1, 0xFFFF):x}"
        people.append((address, rng.choices(agents, weights)[0], rng.choice(LANGUAGES)))
    return people


def plan(count: int, site: str, *, rng: random.Random, targets: Sequence[Tuple[str, int]] = DEMO_TARGETS,
         since: Optional[float] = None, until: Optional[float] = None, visitor_count: int = 300,
         every_target_first: bool = False) -> List[Visit]:
    """``count`` visits; with ``since`` and ``until`` (epoch seconds), each has a time between them, in order.

    Times follow a day's rhythm (quiet nights) and a slow growth from the first day to the last.
    ``every_target_first``: the first visits ask for each target once, so that even a short run
    learns how the server answers every one of them.
    """
    people = visitors(rng, visitor_count)
    paths = [target for target, _ in targets]
    path_weights = [weight for _, weight in targets]
    referers = [referer.replace("{site}", site) for referer, _ in REFERERS]
    referer_weights = [weight for _, weight in REFERERS]
    times = _times(rng, count, since, until) if since is not None and until is not None else [None] * count
    chosen = rng.sample(paths, len(paths)) if every_target_first else []
    chosen += rng.choices(paths, path_weights, k=max(0, count - len(chosen)))
    visits = []
    for when, target in zip(times, chosen):
        address, agent, language = rng.choice(people)
        method, _, path = target.rpartition(" ")
        visits.append(Visit(target=path, method=method or "GET", agent=agent,
                            referer=rng.choices(referers, referer_weights)[0], address=address,
                            language=language, when=when))
    return visits


def _times(rng: random.Random, count: int, since: float, until: float) -> List[float]:
    """``count`` sorted times in [since, until), drawn by rejection against the hourly rhythm and the growth."""
    if until <= since:
        raise TrafficError(f"the past ends ({until}) before it starts ({since})")
    found: List[float] = []
    top = max(_HOURLY) * 1.0
    while len(found) < count:
        when = rng.uniform(since, until)
        growth = 0.6 + 0.4 * (when - since) / (until - since)
        if rng.random() * top <= _HOURLY[time.gmtime(when).tm_hour] * growth:
            found.append(when)
    return sorted(found)


def send(parts: urllib.parse.SplitResult, visits: Sequence[Visit], seconds: float, *, rate: Optional[float] = None) -> Sent:
    """Send ``visits`` one after another, at most ``rate`` a second, and stop when ``seconds`` have passed.

    Redirects followed count as requests: at most ``len(visits)`` are sent in all.
    """
    sent = Sent()
    deadline = time.monotonic() + seconds
    connection = None
    try:
        for number, visit in enumerate(visits):
            now = time.monotonic()
            if sent.count >= len(visits):  # redirects followed count too: never more than planned
                break
            if now >= deadline:
                sent.timed_out = True
                break
            if rate:
                due = deadline - seconds + number / rate
                if due >= deadline:
                    sent.timed_out = True
                    break
                if due > now:
                    time.sleep(due - now)
            if connection is None:
                connection = _connect(parts, max(0.1, deadline - time.monotonic()))
            # A browser follows a redirect (Datasette 1.0 sends ?sql= to /-/query): so do we, a few hops at most.
            for _hop in range(MAX_REDIRECTS + 1):
                try:
                    answer = _get(connection, parts, visit)
                except (OSError, http.client.HTTPException):
                    # A closed keep-alive connection or a server going away: count it, try a new one next time.
                    connection.close()
                    connection = None
                    sent.failed += 1
                    break
                sent.statuses[answer.status] += 1
                sent.answers[visit.request].append(answer)
                if answer.redirect is None or time.monotonic() >= deadline or sent.count >= len(visits):
                    break
                visit = dataclasses.replace(visit, target=answer.redirect, method="GET")
    finally:
        if connection is not None:
            connection.close()
    return sent


def _connect(parts: urllib.parse.SplitResult, timeout: float) -> http.client.HTTPConnection:
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return kind(parts.hostname, parts.port, timeout=min(timeout, 30.0))


def _get(connection: http.client.HTTPConnection, parts: urllib.parse.SplitResult, visit: Visit) -> Answer:
    headers = {"User-Agent": visit.agent, "X-Forwarded-For": visit.address, "Accept-Encoding": "gzip"}
    if visit.referer:
        headers["Referer"] = visit.referer
    if visit.language:
        headers["Accept-Language"] = visit.language
    body = None
    if visit.method == "POST":
        body = POST_BODY
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    started = time.perf_counter()
    connection.request(visit.method, parts.path.rstrip("/") + visit.target, body=body, headers=headers)
    response = connection.getresponse()
    size = len(response.read())
    seconds = time.perf_counter() - started
    redirect = None
    if 300 <= response.status < 400 and response.getheader("Location"):
        redirect = _same_server_target(parts, response.getheader("Location"))
    return Answer(status=response.status, size=size, seconds=seconds, redirect=redirect)


def _same_server_target(parts: urllib.parse.SplitResult, location: str) -> Optional[str]:
    """The target (path and query, below the URL's path) ``location`` names on this server; None elsewhere."""
    found = urllib.parse.urlsplit(urllib.parse.urljoin(parts.geturl(), location))
    base = parts.path.rstrip("/")
    if (found.scheme, found.netloc) != (parts.scheme, parts.netloc) or not found.path.startswith(base + "/"):
        return None
    return found.path[len(base):] + (f"?{found.query}" if found.query else "")


def access_log_lines(visits: Sequence[Visit], answers: Dict[str, List[Answer]], rng: random.Random) -> List[str]:
    """Combined-format lines, with nginx's request time, for the past ``visits`` whose target was answered live."""
    lines = []
    for visit in visits:
        when = visit.when
        request: Optional[str] = visit.request
        for _hop in range(MAX_REDIRECTS + 1):
            measured = answers.get(request) if request is not None else None
            if not measured or when is None:
                break
            answer = rng.choice(measured)
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(when))
            lines.append(f'{visit.address} - - [{stamp}] "{request} HTTP/1.1" {answer.status} {answer.size} '
                         f'"{visit.referer or "-"}" "{visit.agent}" {answer.seconds:.3f}')
            request = f"GET {answer.redirect}" if answer.redirect else None
            when += answer.seconds
    return lines


def import_past(log: str, lines: Sequence[str], days: int) -> int:
    """Import ``lines`` into the log file ``log`` (visitors counted); returns the rows imported."""
    with tempfile.TemporaryDirectory() as folder:
        name = os.path.join(folder, f"traffic-past-{days}-days.log")
        with open(name, "w", encoding="utf-8") as out:
            out.writelines(line + "\n" for line in lines)
        with Importer(log, visitors=True) as importer:
            return importer.import_log(name).imported


def run(url: str, requests: int, seconds: float, *, rate: Optional[float] = None, log: Optional[str] = None,
        past_requests: int = 0, past_days: int = 30, seed: Optional[int] = None) -> str:
    """Send the live traffic, then import the past days into ``log`` if given; returns a one-line summary."""
    parts = loopback_url(url)
    for name, value in (("--requests", requests), ("--past-requests", past_requests), ("--past-days", past_days)):
        if value < 0:
            raise TrafficError(f"{name} {value}: expected a whole number of at least 0")
    if not seconds > 0:
        raise TrafficError(f"--seconds {seconds}: expected a positive number of seconds, for example 60")
    if rate is not None and not rate > 0:
        raise TrafficError(f"--rate {rate}: expected a positive number of requests per second, for example 0.5")
    if past_requests and not log:
        raise TrafficError("--past-requests needs --log FILE: past days go into the log file as an imported access log")
    if log and not os.path.exists(log):
        raise TrafficError(f"--log {log!r}: no such file; create it first (asgi_log_to_sqlite.create_file)")
    if past_requests and past_days < 1:
        raise TrafficError(f"--past-days {past_days}: expected at least 1 day for --past-requests")
    rng = random.Random(seed)
    site = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    live = plan(requests, site, rng=rng, every_target_first=bool(past_requests))
    sent = send(parts, live, seconds, rate=rate)
    if sent.count and sent.failed == sent.count:
        raise TrafficError(f"{url!r}: no request got an answer ({sent.failed} failed); is the server running?")
    summary = f"{sent.count} live requests ({_statuses(sent.statuses)}"
    summary += f", {sent.failed} failed)" if sent.failed else ")"
    if sent.timed_out:
        summary += f", stopped at the {seconds:g} s limit"
    if past_requests:
        now = time.time()
        past = plan(past_requests, site, rng=rng, since=now - past_days * DAY_S, until=now)
        try:
            imported = import_past(log, access_log_lines(past, sent.answers, rng), past_days)
        except (LogError, sqlite3.Error) as error:
            raise TrafficError(f"--log {log!r}: {error}") from None
        summary += f"; {imported} past requests over {past_days} days imported into {log}"
    return summary


def _statuses(statuses: collections.Counter) -> str:
    classes = collections.Counter(f"{status // 100}xx" for status in statuses.elements())
    return ", ".join(f"{count} {name}" for name, count in sorted(classes.items())) or "none answered"


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors said in one line and exit 1, as every other error of the generator."""

    def error(self, message: str):
        print(f"Error: {message} (python -m asgi_log_to_sqlite.traffic --help)", file=sys.stderr)
        sys.exit(1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _Parser(prog="python -m asgi_log_to_sqlite.traffic", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the server, on this machine: http://127.0.0.1:8001")
    parser.add_argument("--requests", type=int, required=True, help="live requests to send, at most")
    parser.add_argument("--seconds", type=float, required=True, help="stop after this many seconds")
    parser.add_argument("--rate", type=float, help="at most this many live requests a second (default: no pause)")
    parser.add_argument("--log", help="the log file to import the past days into")
    parser.add_argument("--past-requests", type=int, default=0, help="requests spread over the past days (needs --log)")
    parser.add_argument("--past-days", type=int, default=30, help="how many days back the past requests go")
    parser.add_argument("--seed", type=int, help="the same seed plans the same traffic")
    parser.add_argument("--quiet", action="store_true", help="print nothing unless something fails")
    args = parser.parse_args(argv)
    try:
        summary = run(args.url, args.requests, args.seconds, rate=args.rate, log=args.log,
                      past_requests=args.past_requests, past_days=args.past_days, seed=args.seed)
    except TrafficError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if not args.quiet:
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
