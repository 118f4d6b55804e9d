"""Importing nginx and Apache access logs: formats, privacy, odd bytes, what is counted, and importing again.

The logs are the small files of tests/fixtures/access/ (or lines written here), imported through
the `import` command (click's CliRunner, or the installed console script for standard input
and exit statuses) or through importer.Importer; the rows are read back through the views a
user reads.
"""
import gc
import gzip
import json
import os
import pathlib
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from array import array

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st

from asgi_log_to_sqlite import AsgiLogToSqlite, accesslog, agents, create_file, importer, schema
from asgi_log_to_sqlite.cli import cli
from asgi_log_to_sqlite.counters import Counters
from asgi_log_to_sqlite.lookups import BUCKET, LookupIds
from asgi_log_to_sqlite.privacy import AddressPolicy
from asgi_log_to_sqlite.record import FLAG_BUCKETED, FLAG_IMPORTED, FLAG_REPLACED, FLAG_TRUNCATED
from asgi_log_to_sqlite.rollups import Rollups

from conftest import BIN, TESTS, ok, rows

ACCESS = TESTS / "fixtures" / "access"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
# (fixture, the format to name, lines it holds, lines that do not parse)
FIXTURES = [("nginx-combined.log", "combined", 6, 1), ("nginx-timed.log", "combined", 3, 0),
            ("apache-common.log", "common", 4, 1), ("apache-combined.log", "combined", 3, 0)]


def command(*args, input=None):
    """The CLI through CliRunner: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def imported(*args, input=None):
    """``import --json ARGS``: the summary of each log, after checking the command succeeded."""
    code, out, err = command("import", "--json", *args, input=input)
    assert code == 0, err
    return json.loads(out)


def line(n, path="/page", agent=FIREFOX, address="203.0.113.42", when="10/Oct/2023:13:55:36 +0000", status=200):
    """A combined log line for request ``n``."""
    return f'{address} - - [{when}] "GET {path}?n={n} HTTP/1.1" {status} {100 + n} "-" "{agent}"\n'


def gzipped(source, target):
    with open(source, "rb") as plain, gzip.open(target, "wb") as packed:
        shutil.copyfileobj(plain, packed)
    return target


def count(db, sql="select count(*) from request_log"):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


# ---- formats and sources ---------------------------------------------------------------------

@pytest.mark.parametrize("fixture, log_format, lines, unparsed", FIXTURES)
@pytest.mark.parametrize("source", ["plain", "gzip", "stdin"])
def test_each_format_imports_from_a_plain_file_a_gzipped_one_and_standard_input(
        tmp_path, fixture, log_format, lines, unparsed, source):
    db = tmp_path / "log.db"
    log = ACCESS / fixture
    if source == "gzip":
        # Named without .gz: the magic bytes say what it is.
        log = gzipped(log, tmp_path / "access.log")
    args = ["--format", log_format, db] + (["-"] if source == "stdin" else [log])
    [summary] = imported(*args, input=(ACCESS / fixture).read_bytes() if source == "stdin" else None)
    assert (summary["lines"], summary["imported"], summary["unparsed"]) == (lines, lines - unparsed, unparsed)
    assert summary["already_imported"] == 0
    assert count(db) == lines - unparsed
    assert count(db, f"select count(*) from request_log where flags & {FLAG_IMPORTED}") == lines - unparsed


def test_auto_reads_combined_and_common_lines_in_one_log(tmp_path):
    log = tmp_path / "mixed.log"
    log.write_bytes((ACCESS / "apache-common.log").read_bytes() + (ACCESS / "apache-combined.log").read_bytes())
    [summary] = imported(tmp_path / "log.db", log)
    assert (summary["imported"], summary["unparsed"]) == (6, 1)
    agents = [r["user_agent"] for r in rows(tmp_path / "log.db")]
    assert agents.count(None) == 3 and "kube-probe/1.28" in agents


def test_a_format_named_is_held_to(tmp_path):
    [summary] = imported("--format", "common", tmp_path / "log.db", ACCESS / "apache-combined.log")
    assert (summary["imported"], summary["unparsed"]) == (0, 3)


def test_readable_requests_shows_an_imported_line_as_the_logger_would(tmp_path):
    imported(tmp_path / "log.db", ACCESS / "nginx-combined.log")
    first = rows(tmp_path / "log.db")[0]
    assert {k: v for k, v in first.items() if v is not None} == {
        "id": 1, "start": "2023-10-10T13:55:36.000Z", "method": "GET", "path": "/blog/post",
        "query_string": "?page=2&token=REDACTED", "http_status": 200, "body_size": 5123,
        "client_ip": "203.0.113.0", "user_agent": FIREFOX,
        "browser": "Firefox", "os": "Linux", "device": "desktop", "is_bot": 0,
        "referer": "https://example.com/search?q=sqlite&api_key=REDACTED",
        "flags": FLAG_IMPORTED, "sample_rate": 1.0,
    }
    by_path = {r["path"]: r for r in rows(tmp_path / "log.db")}
    login = by_path["/login"]
    assert (login["method"], login["http_status"], login["body_size"], login["referer"], login["user_agent"]) == \
        ("POST", 302, 0, None, None)
    # The zone is applied: 15:56:01 +0200 is 13:56:01 UTC; the path is percent-decoded like scope["path"].
    assert by_path["/café/✓"]["start"] == "2023-10-10T13:56:01.000Z"
    assert by_path["/café/✓"]["client_ip"] == "2001:db8:85a3::"
    # Durations are unknown unless the log has them; the 0.1.1-shaped view reads the same rows.
    assert all(r["duration_ms"] is None for r in rows(tmp_path / "log.db"))
    assert count(tmp_path / "log.db", "select count(*) from requests where duration is null") == 5


def test_a_chunk_whose_first_duration_comes_late_keeps_every_row_whole(tmp_path):
    # Rows before the first line with a duration are widened to carry none, and so are the later
    # lines without one: their other columns are as they were.
    lines = [line(n, status=200 + n) for n in range(3)] + [line(3).rstrip("\n") + " 0.012\n", line(4, status=404)]
    (tmp_path / "access.log").write_text("".join(lines))
    imported(tmp_path / "log.db", tmp_path / "access.log")
    found = [(r["query_string"], r["http_status"], r["body_size"], r["duration_ms"]) for r in rows(tmp_path / "log.db")]
    assert found == [("?n=0", 200, 100, None), ("?n=1", 201, 101, None), ("?n=2", 202, 102, None),
                     ("?n=3", 200, 103, 12.0), ("?n=4", 404, 104, None)]


def test_a_trailing_request_time_is_the_duration(tmp_path):
    imported(tmp_path / "log.db", ACCESS / "nginx-timed.log", ACCESS / "apache-combined.log")
    durations = {r["path"]: r["duration_ms"] for r in rows(tmp_path / "log.db")}
    # nginx's $request_time in seconds, Apache's %D in microseconds; the "main" format's extra field is not one.
    assert durations == {"/": 12.0, "/slow": 1500.0, "/main-format": None, "/apache_pb.gif": None,
                         "/quoted": 1.5, "/health": None}
    assert [r["path"] for r in rows(tmp_path / "log.db")][:3] == ["/", "/slow", "/main-format"]  # in line order


def test_apache_escapes_and_a_missing_size(tmp_path):
    imported(tmp_path / "log.db", ACCESS / "apache-combined.log", ACCESS / "apache-common.log")
    by_path = {r["path"]: r for r in rows(tmp_path / "log.db")}
    assert by_path["/quoted"]["user_agent"] == 'Agent "with quotes" and \\ backslash'
    assert by_path["/say"]["query_string"] == '?"hi"'
    assert by_path["/health"]["method"] == "HEAD" and by_path["/health"]["body_size"] == 0
    assert by_path["/search"]["http_status"] == 304 and by_path["/search"]["body_size"] == 0
    assert by_path["/apache_pb.gif"]["start"] == "2000-10-10T20:55:36.000Z"


def test_the_rollups_count_imported_rows(tmp_path):
    imported(tmp_path / "log.db", ACCESS / "nginx-combined.log")
    assert count(tmp_path / "log.db", "select sum(hits) from rollup_daily") == 5
    assert count(tmp_path / "log.db", "select sum(hits) from rollup_hourly where status_class = 4") == 2


def test_the_rollups_the_import_sums_are_those_a_rebuild_sums_from_its_rows(tmp_path):
    # The importer sums each chunk's rollups as it parses (rollups.RollupTally); rebuilding them
    # from the rows it wrote must change nothing, durations, statuses, bots and all.
    bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    # 60 kinds of request, five of each, over two days; half with nginx's $request_time.
    lines = [line(n, path=f"/p/{n % 7}", status=(200, 200, 304, 404, 500)[n % 5], agent=bot if n % 4 else FIREFOX,
                  when=f"{10 + n // 150}/Oct/2023:{n % 60 // 20:02d}:55:36 +0000") for n in range(300)]
    lines = [text.rstrip("\n") + f" 0.01{n % 3}{n % 5}\n" if n % 2 else text for n, text in enumerate(lines)]
    log = tmp_path / "many.log"
    log.write_text("".join(lines))
    db = tmp_path / "log.db"
    imported(db, log, ACCESS / "nginx-combined.log", ACCESS / "nginx-timed.log", ACCESS / "apache-common.log")
    tables = ("rollup_hourly", "rollup_daily", "rollup_traffic_hourly", "rollup_traffic_daily")

    def snapshot():
        conn = sqlite3.connect(db)
        try:
            return {table: sorted(conn.execute(f"select * from {table}")) for table in tables}
        finally:
            conn.close()

    before = snapshot()
    assert sum(row[7] for row in before["rollup_hourly"]) == count(db) > 300
    assert {row[6] for row in before["rollup_hourly"]} - {-1}, "no imported duration reached the rollups"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        Rollups().rebuild(conn)
    finally:
        conn.close()
    assert snapshot() == before


# ---- privacy -----------------------------------------------------------------------------------

def test_addresses_are_truncated_and_secrets_redacted_by_default(tmp_path):
    imported(tmp_path / "log.db", ACCESS / "nginx-combined.log", ACCESS / "apache-common.log")
    stored = {name for (name,) in sqlite3.connect(tmp_path / "log.db").execute("select name from client_ips")}
    assert stored == {"203.0.113.0", "198.51.100.0", "2001:db8:85a3::", "192.0.2.0", "127.0.0.0"}
    texts = "\n".join(str(v) for r in rows(tmp_path / "log.db") for v in r.values())
    for secret in ("s3cr3t", "k3y", "hunter2", "203.0.113.42", "8a2e"):
        assert secret not in texts
    assert "?page=2&token=REDACTED" in texts and "?q=a%20b&password=REDACTED" in texts


def test_client_ip_and_redact_params_are_the_middleware_s_choices(tmp_path):
    log = tmp_path / "access.log"
    log.write_text(line(1, path="/a", address="203.0.113.42").replace("?n=1", "?n=1&tenant=acme&color=red"))
    imported("--client-ip", "full", "--redact-params", "tenant,color", tmp_path / "full.db", log)
    [row] = rows(tmp_path / "full.db")
    assert (row["client_ip"], row["query_string"]) == ("203.0.113.42", "?n=1&tenant=REDACTED&color=REDACTED")
    imported("--client-ip", "none", "--redact-params", "tenant", tmp_path / "none.db", log)
    [row] = rows(tmp_path / "none.db")
    assert (row["client_ip"], row["query_string"]) == (None, "?n=1&tenant=REDACTED&color=red")


def test_addresses_truncate_as_the_middleware_truncates_them(tmp_path):
    addresses = ["10.1.2.3", "10.1.2.250", "255.255.255.255", "0.0.0.0", "01.2.3.4", "1.2.3.256", "1.2.3",
                 "::1", "2001:db8::1", "::ffff:1.2.3.4", "unix:/run/app.sock", "-"]
    log = tmp_path / "access.log"
    log.write_text("".join(line(n, address=a) for n, a in enumerate(addresses)))
    imported(tmp_path / "log.db", log)
    by_query = {r["query_string"]: r["client_ip"] for r in rows(tmp_path / "log.db")}
    policy = AddressPolicy("truncate")
    assert [by_query[f"?n={n}"] for n in range(len(addresses))] == [policy.reduce(a) for a in addresses]


# ---- odd bytes and long values -----------------------------------------------------------------

def test_odd_bytes_are_backslash_escaped_and_flagged(tmp_path):
    imported(tmp_path / "log.db", ACCESS / "nginx-combined.log")
    by_path = {r["path"]: r for r in rows(tmp_path / "log.db")}
    odd = by_path["/odd/\\xff\\xfe"]
    assert odd["flags"] == FLAG_IMPORTED | FLAG_REPLACED
    assert odd["user_agent"] == 'Scanner "quoted" \\slash'
    # Not a request at all (a TLS handshake on the plain port): kept as its path, with no method.
    [handshake] = [r for r in by_path.values() if r["http_status"] == 400]
    assert handshake["method"] is None and handshake["path"].startswith("\x16\x03\x01")
    assert handshake["flags"] & FLAG_REPLACED  # its \xFC is no UTF-8


def test_raw_bytes_that_are_not_utf8_and_long_values(tmp_path):
    log = tmp_path / "access.log"
    long_agent = "A" * 1500
    log.write_bytes(line(1, agent=long_agent).encode() + line(2).encode().replace(b"/page", b"/caf\xe9"))
    imported(tmp_path / "log.db", log)
    first, second = rows(tmp_path / "log.db")
    assert first["user_agent"] == "A" * 1000 and first["flags"] == FLAG_IMPORTED | FLAG_TRUNCATED
    assert second["path"] == "/caf\\xe9" and second["flags"] == FLAG_IMPORTED | FLAG_REPLACED


# ---- what is counted ---------------------------------------------------------------------------

def test_unparsed_lines_are_counted_and_the_first_few_shown(tmp_path):
    log = tmp_path / "access.log"
    text = [line(1), "garbage one\n", line(2), "\n"] + [f"junk {n}\n" for n in range(10)] + [line(3)]
    log.write_text("".join(text))
    [summary] = imported(tmp_path / "log.db", log)
    assert (summary["lines"], summary["imported"], summary["unparsed"]) == (15, 3, 12)
    assert summary["unparsed_lines"] == [
        {"line": 2, "text": "garbage one"}, {"line": 4, "text": ""}, {"line": 5, "text": "junk 0"},
        {"line": 6, "text": "junk 1"}, {"line": 7, "text": "junk 2"}]
    code, out, err = command("import", tmp_path / "again.db", log)
    assert code == 0
    assert out.splitlines()[2].split() == [str(log), "15", "3", "0", "12"]
    assert f"{log}:2: unparsed: garbage one" in err and f"{log}: 7 more unparsed line(s)" in err


def test_a_line_that_parses_only_from_its_middle_is_unparsed(tmp_path):
    log = tmp_path / "access.log"
    log.write_text(line(1) + "Oct 10 host nginx: " + line(2) + line(3))
    [summary] = imported(tmp_path / "log.db", log)
    assert (summary["imported"], summary["unparsed"]) == (2, 1)
    assert summary["unparsed_lines"][0]["line"] == 2


def test_times_that_cannot_be_are_unparsed(tmp_path):
    log = tmp_path / "access.log"
    bad = ["32/Oct/2023:13:55:36 +0000", "10/Foo/2023:13:55:36 +0000", "10/Oct/2023:25:00:00 +0000",
           "10/Oct/2023:13:55:61 +0000", "29/Feb/2023:00:00:00 +0000"]
    log.write_text(line(0, when="29/Feb/2024:00:00:60 +0000") + "".join(line(n, when=w) for n, w in enumerate(bad, 1)))
    [summary] = imported(tmp_path / "log.db", log)
    assert (summary["imported"], summary["unparsed"]) == (1, 5)
    assert [shown["text"] for shown in summary["unparsed_lines"]] == [
        line(n, when=w).rstrip("\n") for n, w in enumerate(bad, 1)]
    assert rows(tmp_path / "log.db")[0]["start"] == "2024-02-29T00:01:00.000Z"  # a leap second


@st.composite
def log_lines(draw):
    """Lines of bytes: arbitrary ones, and real ones with bytes changed or cut."""
    real = [line(n).encode().rstrip(b"\n") for n in range(3)] + [
        raw.rstrip(b"\r") for fixture, *_ in FIXTURES for raw in (ACCESS / fixture).read_bytes().split(b"\n") if raw]
    arbitrary = st.binary(max_size=200).map(lambda b: b.replace(b"\n", b""))
    mutated = st.tuples(st.sampled_from(real), st.integers(0, 300), st.integers(0, 20), st.binary(max_size=8)).map(
        lambda t: (t[0][:t[1]] + t[3] + t[0][t[1] + t[2]:]).replace(b"\n", b""))
    return draw(st.lists(st.one_of(arbitrary, mutated, st.sampled_from(real)), max_size=20))


@given(log_lines(), st.sampled_from(importer.FORMATS), st.booleans())
def test_any_bytes_never_raise_and_each_line_is_imported_or_counted(lines, log_format, terminated):
    with tempfile.TemporaryDirectory() as folder:
        db, log = os.path.join(folder, "log.db"), os.path.join(folder, "access.log.gz")
        text = b"\n".join(lines) + (b"\n" if terminated and lines else b"")
        with gzip.open(log, "wb") as out:  # gzip: a last line without a newline is read too
            out.write(text)
        create_file(db)
        with importer.Importer(db, log_format=log_format) as running:
            result = running.import_log(log)
        # Without a final newline, an empty last line is no line at all.
        expected = len(lines) - (not terminated and bool(lines) and lines[-1] == b"")
        assert result.imported + result.unparsed == result.lines == expected
        assert count(db) == result.imported
        assert count(db, f"select count(*) from request_log where flags & {FLAG_IMPORTED}") == result.imported
        assert len(result.unparsed_lines) == min(result.unparsed, importer.SHOWN_UNPARSED)


@given(log_lines(), st.lists(st.tuples(st.integers(0, 300), st.sampled_from([b'"', b"\\", b'\\"', b"\r", b" "])),
                             max_size=4))
def test_the_loose_chunk_pattern_splits_a_chunk_as_the_strict_one_does(lines, inserted):
    if lines:
        for at, text in inserted:  # quotes and backslashes where the loose pattern could go astray
            lines[at % len(lines)] = lines[at % len(lines)][:at] + text + lines[at % len(lines)][at:]
    piece = b"\n".join(lines) + b"\n"
    for log_format in importer.FORMATS:
        split = accesslog.Lines(log_format)
        strict = accesslog._CHUNK_PATTERNS["common" if log_format == "common" else "combined"]
        assert split.split(piece) == strict.findall(piece)


@given(st.lists(st.sampled_from([b"GET", b"G", b"-", b"_", b" ", b"/p", b"?", b"HTTP/", b"1", b".", b"\n", b"\xff"]),
                max_size=12).map(b"".join))
def test_a_request_line_splits_as_the_plain_pattern_splits_it(text):
    plain = re.fullmatch(rb"([A-Z][A-Z0-9_-]{0,31}) (.+?)(?: HTTP/\d(?:\.\d)?)?", text, re.S)
    found = accesslog._REQUEST.match(text)
    assert (found is None) == (plain is None)
    if found is not None:
        assert (found.group(1), found.group(2) or found.group(3)) == plain.groups()


# ---- importing again ---------------------------------------------------------------------------

def test_importing_the_same_log_twice_adds_nothing(tmp_path):
    db = tmp_path / "log.db"
    [first] = imported(db, ACCESS / "nginx-combined.log")
    [second] = imported(db, ACCESS / "nginx-combined.log")
    assert (second["lines"], second["imported"], second["already_imported"], second["unparsed"]) == (6, 0, 6, 0)
    assert count(db) == first["imported"] == 5
    # Moved or renamed, it is the same log.
    shutil.copy(ACCESS / "nginx-combined.log", tmp_path / "elsewhere.log")
    [third] = imported(db, tmp_path / "elsewhere.log")
    assert third["already_imported"] == 6 and count(db) == 5


def test_a_log_that_grew_is_continued_where_it_stopped(tmp_path):
    db, log = tmp_path / "log.db", tmp_path / "access.log"
    log.write_text("".join(line(n) for n in range(100)))
    imported(db, log)
    with open(log, "a") as out:
        out.write("".join(line(n) for n in range(100, 130)))
    [summary] = imported(db, log)
    assert (summary["lines"], summary["imported"], summary["already_imported"]) == (130, 30, 100)
    assert count(db) == 130
    assert count(db, "select count(distinct query_string) from readable_requests") == 130


def test_a_gzipped_copy_of_an_imported_log_is_recognised(tmp_path):
    db, log = tmp_path / "log.db", tmp_path / "access.log"
    log.write_text("".join(line(n) for n in range(300)))
    imported(db, log)
    # logrotate: the file grew a little more, then was compressed away as access.log.1.gz.
    with open(log, "a") as out:
        out.write("".join(line(n) for n in range(300, 310)))
    [summary] = imported(db, gzipped(log, tmp_path / "access.log.1.gz"))
    assert (summary["imported"], summary["already_imported"]) == (10, 300)
    assert count(db) == 310
    again = imported(db, tmp_path / "access.log.1.gz", log)
    assert [summary["imported"] for summary in again] == [0, 0] and count(db) == 310


def test_a_copy_from_standard_input_is_recognised_too(tmp_path):
    db, log = tmp_path / "log.db", tmp_path / "access.log"
    log.write_text("".join(line(n) for n in range(50)))
    imported(db, log)
    [summary] = imported(db, "-", input=log.read_bytes() + line(50).encode())
    assert (summary["imported"], summary["already_imported"]) == (1, 50)


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_a_log_sharing_only_its_first_line_is_imported_whole(tmp_path, source):
    db, log, other = tmp_path / "log.db", tmp_path / "a.log", tmp_path / "b.log"
    log.write_text("".join(line(n) for n in range(40)))
    other.write_text(line(0) + "".join(line(n, path="/other") for n in range(1, 60)))
    imported(db, log)
    # Small chunks, so that the lines checked against the first log span several of them.
    with importer.Importer(str(db), chunk_bytes=2048) as running:
        if source == "file":
            result = running.import_log(str(other))
        else:
            with open(other, "rb") as stdin:
                result = _with_stdin(stdin, lambda: running.import_log("-"))
    assert (result.imported, result.already_imported) == (60, 0)
    assert count(db) == 100
    assert count(db, "select count(*) from readable_requests where path = '/other'") == 59


def _with_stdin(stream, action):
    """Run ``action`` with sys.stdin reading ``stream`` (a binary file)."""
    import io
    import sys

    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(stream)
    try:
        return action()
    finally:
        sys.stdin.detach()
        sys.stdin = saved


def test_a_shorter_copy_of_an_imported_log_adds_nothing(tmp_path):
    db, log, head = tmp_path / "log.db", tmp_path / "access.log", tmp_path / "head.log"
    log.write_text("".join(line(n) for n in range(200)))
    head.write_text("".join(line(n) for n in range(150)))
    imported(db, log)
    [summary] = imported(db, head)
    assert (summary["imported"], summary["already_imported"]) == (0, 150)


def test_the_last_line_of_a_log_still_being_written_waits_for_the_next_import(tmp_path):
    db, log = tmp_path / "log.db", tmp_path / "access.log"
    whole = line(1) + line(2)
    log.write_text(whole[:-20])  # nginx is mid-way through writing line 2
    code, out, err = command("import", db, log)
    assert code == 0 and "its last line has no newline yet" in err
    assert count(db) == 1
    log.write_text(whole)
    [summary] = imported(db, log)
    assert (summary["imported"], summary["already_imported"]) == (1, 1)
    assert [r["query_string"] for r in rows(db)] == ["?n=1", "?n=2"]


def test_an_interrupted_import_goes_on_from_its_last_chunk(tmp_path):
    db, log = tmp_path / "log.db", tmp_path / "access.log"
    log.write_text("".join(line(n) for n in range(400)))
    create_file(str(db))

    class Stop(Exception):
        pass

    chunks = []

    def stop_after_two_chunks(position):
        chunks.append(position)
        if len(chunks) == 2:
            raise Stop

    with importer.Importer(str(db), chunk_bytes=4096) as running:
        with pytest.raises(Stop):
            running.import_log(str(log), stop_after_two_chunks)
    done = count(db)
    assert 0 < done < 400
    [summary] = imported(db, log)
    assert (summary["imported"], summary["already_imported"]) == (400 - done, done)
    assert count(db) == 400 and count(db, "select count(distinct query_string_id) from request_log") == 400


# ---- the shaper and the writer thread -----------------------------------------------------------

def plain_patched(flat, width, resolved):
    """importer.patched's reference: row by row, value by value."""
    out = []
    for start in range(0, len(flat), width):
        row, extra = list(flat[start:start + width]), 0
        for column in range(4, 10):
            if row[column] < 0:
                row[column], more = resolved[-1 - row[column]]
                extra |= more
        row[3] |= extra
        out += row
    return out


@st.composite
def shaped_chunks(draw):
    """(flat rows of importer.COLUMNS or TIMED_COLUMNS with provisional ids, width, resolved)."""
    resolved = draw(st.lists(st.tuples(st.integers(1, 10**6), st.sampled_from([0, 0, FLAG_BUCKETED])), max_size=8))
    width = draw(st.sampled_from([len(importer.COLUMNS), len(importer.TIMED_COLUMNS)]))
    ids = st.integers(0, 50) | (st.integers(-len(resolved), -1) if resolved else st.just(0))
    row = st.tuples(st.integers(0, 2**41), st.integers(100, 599), st.integers(0, 10**6), st.integers(0, 255),
                    *[ids] * 6, *([st.just(importer.NO_DURATION) | st.integers(0, 10**7)] if width > 10 else []))
    return array(importer.ROWS_TYPE, [value for drawn in draw(st.lists(row, max_size=20)) for value in drawn]), width, resolved


@given(shaped_chunks())
def test_provisional_ids_are_replaced_as_a_row_by_row_pass_would(chunk):
    flat, width, resolved = chunk
    before = list(flat)
    assert list(importer.patched(flat, width, resolved)) == plain_patched(flat, width, resolved)
    assert list(flat) == before  # a writer that must try the chunk again patches it again
    for start in range(0, len(flat), width):
        entry = (*flat[start + 4:start + 7], flat[start + 3])  # as a request line's cache entry
        assert importer.resolved_entry(entry, resolved) == tuple(plain_patched(
            [0, 0, 0, entry[3], *entry[:3], 0, 0, 0], 10, resolved)[i] for i in (4, 5, 6, 3))


NAMES = st.sampled_from(["/a", "/b", "/c", "/d\x00nul", "/e\x00", BUCKET, "Googlebot/2.1", FIREFOX, "curl/8.0"])


def lookups_of(limit):
    conn = sqlite3.connect(":memory:", isolation_level=None)
    schema.ensure_schema(conn)
    lookups = LookupIds(Counters(":memory:", "bucketed"), limit)
    lookups.classifier = agents.Classifier(per_second=None)
    lookups.conn = conn
    return lookups


@given(st.sampled_from(["paths", "user_agents"]), st.sampled_from([None, 0, 1, 3]), st.lists(NAMES, max_size=4),
       st.lists(st.lists(NAMES, max_size=6, unique=True), max_size=4))
def test_a_chunk_s_new_values_get_what_one_lookup_after_another_gives(table, limit, stored, chunks):
    """LookupIds.ids_of, the importer's writer's statement or two per table, against id_of per value:
    the same values stored (with the same classes), the same bucketing past max_distinct_values,
    the same counts of what was bucketed."""
    one_by_one, batched = lookups_of(limit), lookups_of(None)
    for name in stored:  # values the file held before the import
        batched.conn.execute(f"INSERT OR IGNORE INTO {table} (name) VALUES (?)", (name,))
        one_by_one.conn.execute(f"INSERT OR IGNORE INTO {table} (name) VALUES (?)", (name,))
    batched.max_distinct_values = limit

    def named(lookups, looked):
        return [(lookups.conn.execute(f"SELECT name FROM {table} WHERE id = ?", (found,)).fetchone()[0], flags)
                for found, flags in looked]

    for chunk in chunks:
        expected = named(one_by_one, [one_by_one.id_of(table, name) for name in chunk])
        assert named(batched, batched.ids_of(table, chunk)) == expected
    listed = f"SELECT * FROM {table} ORDER BY name" if table == "paths" else \
        f"SELECT name, browser, os, device, is_bot FROM {table} ORDER BY name"
    assert batched.conn.execute(listed.replace("*", "name")).fetchall() == \
        one_by_one.conn.execute(listed.replace("*", "name")).fetchall()
    assert batched.counters.totals == one_by_one.counters.totals


def test_an_import_leaves_no_thread_behind_and_python_s_switch_interval_and_gc_as_they_were(tmp_path):
    db, log = tmp_path / "log.db", tmp_path / "access.log"
    log.write_text("".join(line(n) for n in range(400)))
    create_file(str(db))
    threads, interval, thresholds = threading.active_count(), sys.getswitchinterval(), gc.get_threshold()
    seen = []
    with importer.Importer(str(db), chunk_bytes=4096) as running:
        write = running._write
        running._write = lambda *chunk: (seen.append(gc.get_threshold()), write(*chunk))
        assert running.import_log(str(log)).imported == 400
    assert seen and set(seen) == {importer.GC_THRESHOLDS}
    assert (threading.active_count(), sys.getswitchinterval(), gc.get_threshold()) == (threads, interval, thresholds)
    assert count(db, "select count(distinct query_string_id) from request_log") == 400


def test_a_lock_held_past_the_deadline_stops_the_import_with_one_error(tmp_path):
    db, log = tmp_path / "log.db", tmp_path / "access.log"
    log.write_text("".join(line(n) for n in range(400)))
    create_file(str(db))
    holder = sqlite3.connect(db, isolation_level=None)
    threads, interval = threading.active_count(), sys.getswitchinterval()
    with importer.Importer(str(db), chunk_bytes=4096, busy_timeout_ms=50, lock_deadline_s=0.3) as running:
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(importer.LogError, match="still locked by another connection after 0.3 s"):
                running.import_log(str(log))
        finally:
            holder.execute("ROLLBACK")
        assert (threading.active_count(), sys.getswitchinterval()) == (threads, interval)
        assert count(db) == 0
        # Once the lock is free the same importer goes on, its caches none the worse.
        assert running.import_log(str(log)).imported == 400
    assert count(db, "select count(distinct query_string_id) from request_log") == 400


# ---- beside a live logger ------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_importing_beside_a_live_logger_of_the_same_file_loses_and_doubles_nothing(tmp_path):
    db, log = tmp_path / "log.db", tmp_path / "access.log"
    log.write_text("".join(line(n) for n in range(5000)))
    create_file(str(db))
    logged = AsgiLogToSqlite(ok, str(db), batch_size=50)
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(result=importer.import_logs(str(db), [str(log)],
                                                                                        chunk_bytes=16_384)[0]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=logged), base_url="http://testserver") as client:
        worker.start()
        for n in range(300):
            assert (await client.get(f"/live/{n}")).status_code == 200
    worker.join(60)
    assert logged.close()
    assert outcome["result"].imported == 5000
    assert count(db, f"select count(*) from request_log where flags & {FLAG_IMPORTED}") == 5000
    assert count(db, "select count(*) from readable_requests where path like '/live/%'") == 300
    assert count(db, "select count(distinct query_string_id) from request_log where query_string_id is not null") == 5000


def test_a_held_write_lock_is_waited_for(tmp_path):
    db, log = tmp_path / "log.db", tmp_path / "access.log"
    log.write_text("".join(line(n) for n in range(20)))
    create_file(str(db))
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.5, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    try:
        [result] = importer.import_logs(str(db), [str(log)], busy_timeout_ms=200)
    finally:
        release.join()
        holder.close()
    assert result.imported == 20 and time.monotonic() - started >= 1.4


# ---- user errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["{db}", "{tmp}/missing.log"], "missing.log: no such file"),
    (["--format", "json", "{db}", "{log}"], "--format 'json': expected one of auto, combined, common"),
    (["{notlog}", "{log}"], "not a request log"),
    (["{tmp}", "{log}"], "is a directory"),
    (["{db}", "{tmp}"], "is a directory; give an access log file"),
])
def test_user_errors_are_one_line_and_exit_1(tmp_path, args, message):
    notlog = tmp_path / "other.db"
    conn = sqlite3.connect(notlog)
    conn.execute("create table t (x)")
    conn.close()
    names = {"db": tmp_path / "log.db", "tmp": tmp_path, "log": ACCESS / "nginx-combined.log", "notlog": notlog}
    result = subprocess.run([str(BIN / "asgi-log-to-sqlite"), "import"] + [a.format(**names) for a in args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "log.db").exists()  # nothing created for a command that could not run


def test_other_compressions_and_a_cut_gzip_are_one_line_each(tmp_path):
    db = tmp_path / "log.db"
    bz = tmp_path / "access.log.bz2"
    bz.write_bytes(b"BZh91AY&SY" + bytes(40))
    code, _, err = command("import", db, bz)
    assert code == 1 and "compressed with bzip2" in err and "bzcat" in err
    cut = tmp_path / "cut.gz"
    whole = gzip.compress("".join(line(n) for n in range(2000)).encode())
    cut.write_bytes(whole[: len(whole) // 2])
    code, _, err = command("import", db, cut)
    assert code == 1 and "the gzip data ends early" in err
    assert 0 < count(db) < 2000  # the complete lines before the cut are in


def test_standard_input_through_the_console_script(tmp_path):
    db = tmp_path / "log.db"
    packed = gzip.compress((ACCESS / "nginx-combined.log").read_bytes())
    result = subprocess.run([str(BIN / "asgi-log-to-sqlite"), "import", "--json", str(db), "-"], input=packed,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["imported"] == 5
    assert count(db) == 5
