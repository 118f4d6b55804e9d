"""Access-log import speed: ours against GoAccess on the same synthetic combined log, in one run.

    .venvs/datasette-1.0/bin/python benchmarks/import_logs.py [--lines 1000000] [--rounds 3] [--split] [--against REV]

The log is generated from a fixed seed, so every run reads the same bytes: --lines lines spread
over 30 days, paths with a long tail (a few hundred pages take most hits; assets, API calls with
query strings, scanners' one-off paths), a few thousand user agents of which a fifth are bots and
crawlers, referers, a realistic status mix, addresses from a few tens of thousands of clients.

Each round imports it into a fresh database (asgi_log_to_sqlite.importer.Importer, the code the
`import` command runs) and runs GoAccess on it (`goaccess FILE --log-format=COMBINED -o
report.json`; Debian's goaccess, installed with apt-get when missing), alternating, and times
each as wall time of the whole job. Reported: lines/s of each, best and median over the rounds,
and the database's bytes per request against the log's text and gzip sizes. Two cores shared
with other work: treat single figures as noisy; the ratio measured side by side is the result.

--against REV imports with that git revision too (a temporary worktree), in the same rounds; then
every import of ours runs in a process of its own, this tree's and the revision's alike.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
# A child (--child TREE, run by --against) imports the package of that tree: a revision's worktree.
TREE = pathlib.Path(sys.argv[sys.argv.index("--child") + 1]) if "--child" in sys.argv else HERE.parent
sys.path.insert(0, str(TREE))
sys.path.insert(1, str(HERE))

from asgi_log_to_sqlite import create_file  # noqa: E402
from asgi_log_to_sqlite.importer import CHUNK_BYTES, Importer  # noqa: E402
from servers import revisions  # noqa: E402

START = 1_696_118_400  # 2023-10-01T00:00:00Z
DAYS = 30
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_{m}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{w}.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS {w}_{m} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{w}.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android {a}; SM-G99{m}B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.{m}.0",
)
BOTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "curl/{v}.{m}.0", "python-requests/2.{v}.{m}", "Go-http-client/1.1", "Wget/1.{v}.{m}",
    "Mozilla/5.0 (compatible; MJ12bot/v1.4.{m}; http://mj12bot.com/)", "facebookexternalhit/1.1",
    "Mozilla/5.0 zgrab/0.x", "okhttp/4.{v}.{m}",
)
SECTIONS = ("blog", "docs", "products", "tags", "users", "news", "help")
SCANNED = ("/wp-login.php", "/.env", "/admin/config.php", "/phpmyadmin/index.php", "/.git/config", "/xmlrpc.php",
           "/cgi-bin/luci", "/boaform/admin/formLogin", "/vendor/phpunit/src/Util/PHP/eval-stdin.php")
REFERERS = ("https://www.google.com/", "https://www.bing.com/search?q={w}", "https://duckduckgo.com/",
            "https://news.ycombinator.com/item?id={n}", "https://t.co/{w}", "https://example.com{p}")
STATUSES = ((200, 80), (304, 8), (301, 3), (302, 2), (404, 5), (403, 0.5), (500, 0.4), (503, 0.1), (206, 1))


def agents(rng: random.Random, count: int):
    """``count`` distinct user agents: four in five browsers, the rest bots and tools."""
    found = set()
    while len(found) < count:
        template = rng.choice(BOTS) if rng.random() < 0.2 else rng.choice(BROWSERS)
        found.add(template.format(v=rng.randint(60, 125), m=rng.randint(0, 9), w=rng.randint(12, 17), a=rng.randint(8, 14)))
    return sorted(found)


def generate(path: pathlib.Path, lines: int, seed: int = 12) -> None:
    """Write the synthetic combined log: same seed and line count, same bytes."""
    rng = random.Random(seed)
    pages = [f"/{rng.choice(SECTIONS)}/{rng.randint(1, 10**6)}-{'-'.join(rng.choice(('a', 'how', 'sqlite', 'log', 'data', 'python', 'new', 'the', 'fast')) for _ in range(rng.randint(1, 4)))}"
             for _ in range(20_000)]
    assets = [f"/static/{kind}/{n}.{ext}" for n in range(150) for kind, ext in (("css", "css"), ("js", "js"), ("img", "png"))]
    agent_list = agents(rng, 3_000)
    weights = [1 / (rank + 1) for rank in range(len(agent_list))]  # a few agents send most requests
    clients = [f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(40_000)]
    clients += [f"2001:db8:{rng.randint(0, 65535):x}:{rng.randint(0, 65535):x}::{rng.randint(1, 65535):x}" for _ in range(5_000)]
    codes, code_weights = zip(*STATUSES)
    step = DAYS * 86_400 / lines
    agent_picks = rng.choices(agent_list, weights, k=lines)
    page_picks = rng.choices(range(len(pages)), [1 / (rank + 1) ** 1.1 for rank in range(len(pages))], k=lines)
    status_picks = rng.choices(codes, code_weights, k=lines)
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        buffer = []
        for i in range(lines):
            when = time.gmtime(START + int(i * step))
            stamp = f"{when.tm_mday:02d}/{MONTHS[when.tm_mon - 1]}/{when.tm_year}:{when.tm_hour:02d}:{when.tm_min:02d}:{when.tm_sec:02d} +0000"
            roll = rng.random()
            if roll < 0.55:
                target = pages[page_picks[i]]
                if rng.random() < 0.1:
                    target += f"?page={rng.randint(1, 30)}"
            elif roll < 0.85:
                target = rng.choice(assets) + (f"?v={rng.randint(1, 40)}" if rng.random() < 0.3 else "")
            elif roll < 0.97:
                target = f"/api/v1/items?id={rng.randint(1, 3_000)}&limit={rng.choice((10, 20, 50))}"
                if rng.random() < 0.05:
                    target += f"&token={rng.getrandbits(64):016x}"
            else:
                target = rng.choice(SCANNED) if rng.random() < 0.6 else f"/{rng.getrandbits(40):010x}.php"
            method = "GET" if rng.random() < 0.93 else rng.choice(("POST", "HEAD", "PUT", "OPTIONS"))
            status = status_picks[i]
            size = 0 if status in (304, 301, 302) or method == "HEAD" else int(rng.lognormvariate(8.5, 1.3))
            referer = "-"
            if rng.random() < 0.45:
                referer = rng.choice(REFERERS).format(w=rng.randint(1, 999), n=rng.randint(38_000_000, 38_000_100),
                                                      p=pages[rng.randrange(200)])
            buffer.append(f'{rng.choice(clients)} - - [{stamp}] "{method} {target} HTTP/1.1" {status} {size} '
                          f'"{referer}" "{agent_picks[i]}"\n')
            if len(buffer) >= 10_000:
                out.write("".join(buffer))
                buffer.clear()
        out.write("".join(buffer))


def ours(log: pathlib.Path, db: pathlib.Path, holds: list, rollups: bool = True, chunk_bytes: int = CHUNK_BYTES) -> float:
    """Seconds to import ``log`` into a new database ``db``; the seconds each chunk's transaction
    held the write lock are appended to ``holds``. ``rollups=False``: without the rollups' share."""
    for suffix in ("", "-wal", "-shm"):
        pathlib.Path(f"{db}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    create_file(str(db))
    with Importer(str(db), chunk_bytes=chunk_bytes) as importer:
        write = importer._write

        def timed_write(*args):
            begun = time.perf_counter()
            try:
                return write(*args)
            finally:
                holds.append(time.perf_counter() - begun)

        importer._write = timed_write
        if not rollups:
            importer.rollups.update = lambda conn, first_id, last_id: None
        result = importer.import_log(str(log))
    took = time.perf_counter() - started
    if result.imported + result.unparsed != result.lines or result.unparsed:
        raise SystemExit(f"import went wrong: {result}")
    return took


def ours_in_child(tree: pathlib.Path, log: pathlib.Path, db: pathlib.Path, holds: list, rollups: bool,
                  chunk_bytes: int) -> float:
    """ours(), in a process of its own that imports ``tree``'s package."""
    command = [sys.executable, str(HERE / "import_logs.py"), "--child", str(tree), "--log", str(log), "--db", str(db),
               "--chunk-bytes", str(chunk_bytes)] + ([] if rollups else ["--no-rollups"])
    found = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    holds.extend(found["holds"])
    return found["seconds"]


def goaccess(log: pathlib.Path, folder: pathlib.Path) -> float:
    """Seconds for GoAccess to parse ``log`` and write its JSON report."""
    report = folder / "report.json"
    started = time.perf_counter()
    subprocess.run(["goaccess", str(log), "--log-format=COMBINED", "--no-progress", "-o", str(report)], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - started
    if json.loads(report.read_text())["general"]["valid_requests"] == 0:
        raise SystemExit("goaccess parsed no line of the log")
    return took


def ensure_goaccess() -> str:
    if shutil.which("goaccess") is None:
        print("installing goaccess (apt-get install -y goaccess) ...", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "goaccess"], check=True, stdout=subprocess.DEVNULL)
    return subprocess.run(["goaccess", "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "asgi-log-import-bench"),
                        help="where the generated log is kept between runs, and the database written")
    parser.add_argument("--no-goaccess", action="store_true", help="time our import only")
    parser.add_argument("--split", action="store_true",
                        help="also time our import with the rollups left out, to show their share")
    parser.add_argument("--chunk-bytes", type=int, default=CHUNK_BYTES,
                        help="log bytes per transaction (the importer's chunk_bytes), to weigh speed against lock holds")
    parser.add_argument("--against", metavar="REV", help="also import with this git revision, in the same rounds")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--no-rollups", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        holds: list = []
        seconds = ours(pathlib.Path(args.log), pathlib.Path(args.db), holds, not args.no_rollups, args.chunk_bytes)
        print(json.dumps({"seconds": seconds, "holds": holds}))
        return
    folder = pathlib.Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"access-{args.lines}.log"
    if not log.exists():
        started = time.perf_counter()
        generate(log, args.lines)
        print(f"generated {log} ({args.lines:,} lines) in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    version = None if args.no_goaccess else ensure_goaccess()
    db = folder / "imported.db"
    with revisions(args.against) as trees:
        times = {"ours": [], "goaccess": [], "ours, rollups left out": []}
        times.update({f"ours at {name}": [] for name in trees if name != "this tree"})
        holds: list = []

        def import_with(name: str, found: list, rollups: bool = True) -> float:
            if not args.against:
                return ours(log, db, found, rollups, args.chunk_bytes)
            return ours_in_child(trees[name], log, db, found, rollups, args.chunk_bytes)

        for _ in range(args.rounds):
            # The revision's first: the database this tree's import leaves is the one measured below.
            for name in trees:
                if name != "this tree":
                    times[f"ours at {name}"].append(import_with(name, []))
            if args.split:
                times["ours, rollups left out"].append(import_with("this tree", [], rollups=False))
            times["ours"].append(import_with("this tree", holds))
            if version:
                times["goaccess"].append(goaccess(log, folder))
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = conn.execute("SELECT count(*) FROM request_log").fetchone()[0]
    conn.close()
    text = log.stat().st_size
    with open(log, "rb") as source:
        compressed = len(gzip.compress(source.read(), compresslevel=6))
    print(f"log: {args.lines:,} combined lines, {text / args.lines:.0f} bytes each as text, "
          f"{compressed / args.lines:.1f} gzipped (level 6)")
    print(f"database: {db.stat().st_size / rows:.1f} bytes per request ({rows:,} rows)")
    for name, runs in times.items():
        if runs:
            label = {"ours": "ours (asgi-log-to-sqlite import)", "goaccess": f"goaccess ({version})"}.get(name, name)
            print(f"{label}: best {args.lines / min(runs):,.0f} lines/s, median {args.lines / statistics.median(runs):,.0f} "
                  f"lines/s over {len(runs)} rounds")
    print(f"write lock held per chunk: median {statistics.median(holds) * 1000:.0f} ms, "
          f"longest {max(holds) * 1000:.0f} ms ({len(holds) // args.rounds} chunks)")
    if times["goaccess"]:
        print(f"ours / goaccess, best against best: {min(times['goaccess']) / min(times['ours']):.2f}")
    if args.against:
        before = times[f"ours at {args.against}"]
        print(f"this tree / {args.against}, median against median: "
              f"{statistics.median(before) / statistics.median(times['ours']):.2f}")
    for suffix in ("", "-wal", "-shm"):
        pathlib.Path(f"{db}{suffix}").unlink(missing_ok=True)
    (folder / "report.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
