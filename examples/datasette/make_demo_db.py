"""Create examples/datasette/demo.db (or the path given), the database the demo serves; run again to rebuild it."""
import pathlib
import sqlite3
import sys

DEFAULT_PATH = pathlib.Path(__file__).with_name("demo.db")

MIDDLEWARE = [
    ("asgi-cors", "asgi_cors.asgi_cors", "Adds CORS headers for listed origins"),
    ("starlette", "starlette.middleware.gzip.GZipMiddleware", "Compresses large responses"),
    ("starlette", "starlette.middleware.trustedhost.TrustedHostMiddleware", "Rejects unexpected Host headers"),
    ("uvicorn", "uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware", "Trusts X-Forwarded-* from listed proxies"),
    ("asgi-csrf", "asgi_csrf.asgi_csrf", "CSRF protection used by Datasette"),
]


def main() -> None:
    path = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("create table middleware (id integer primary key, distribution text, target text, purpose text)")
        conn.executemany("insert into middleware (distribution, target, purpose) values (?, ?, ?)", MIDDLEWARE)
        # Enough rows that the table's JSON is over GZipMiddleware's 1000-byte threshold.
        conn.execute("create table numbers (n integer primary key, square integer, label text)")
        conn.executemany(
            "insert into numbers values (?, ?, ?)", [(n, n * n, f"number {n}") for n in range(1, 501)]
        )
    conn.close()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
