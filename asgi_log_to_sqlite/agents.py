"""User-agent classes: browser, OS, device class and a bot flag, found once per new lookup row.

``classify(agent)`` runs ua-parser (its Rust matcher, ua-parser-rs, when installed) and adds what
ua-parser does not say: a device class and a bot flag that also covers HTTP libraries, command-line
tools and monitors. lookups.py calls a ``Classifier`` when it creates a user_agents row, inside the
writer's transaction, so the rollups of the same batch read the flag; past a budget of parses a
second it gives the bot flag alone (``flag_only``), and ``reclassify`` fills in the rest later.
docs/agents.md says why this parser, what each class means and what it costs.
"""
from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from typing import Any, Callable, Iterator, List, NamedTuple, Optional, Tuple

import sqlite_utils

# Device classes.
DESKTOP, MOBILE, TABLET, BOT, OTHER = "desktop", "mobile", "tablet", "bot", "other"
DEVICE_CLASSES = (DESKTOP, MOBILE, TABLET, BOT, OTHER)
# ua-parser's name for a browser or OS it does not know.
UNKNOWN = "Other"
# lookups.BUCKET (lookups imports this module), and its classes: that row stands for many agents
# past max_distinct_values, of which nothing is known, so its bot flag stays NULL ("unknown"), like
# a request with no agent.
_BUCKET = "(other)"
BUCKET_CLASSES = ("(other)", "(other)", OTHER, None)

# Agents that are programs rather than people, which ua-parser does not mark as "Spider": HTTP
# libraries, command-line tools, monitors, previews, feed readers, scanners, and agents that give a
# URL to read about them (browsers never do). Case-blind. Written for both Rust's regex crate (no
# look-behind) and Python's re: the words in the last line also occur inside people's agents
# ("CUBOT" phones, "HTC Ruby", "SEMC-Java/2.0" on feature phones), hence their guards.
AUTOMATED = (
    r"crawl|spider|slurp|scrap|scan|fetch|monitor|uptime|check|preview|archiv|validat|feed|http[ _.-]?client"
    r"|wget|python|go-http|okhttp|libwww|perl|axios|undici|headless|phantomjs|selenium|puppeteer|playwright"
    r"|postman|insomnia|httpie|aiohttp|httpx|urllib|guzzle|synthetic|lighthouse|pingdom|nagios|zabbix"
    r"|prometheus|nmap|nikto|masscan|zgrab|nuclei|sqlmap|http://|https://"
    r"|(?:^|[^u]|(?:^|[^c])u)bots?(?:\b|[/_-])|\brss\b|\bcurl\b|(?:^|[^\w-])java/\d|\bphp|^ruby|\bruby/|\bdart/"
)
# Agents with no "(...)" comment, only product tokens: every browser describes its platform there.
_COMMENT = re.compile(r"\(.*\)")
_TABLET_FAMILIES = frozenset({"iPad", "Kindle", "Kindle Fire", "Generic Tablet", "BlackBerry Playbook",
                              "Blackberry Playbook", "Galaxy Tab", "Xoom", "Dell Streak", "Surface"})
_MOBILE_FAMILIES = frozenset({"iPhone", "iPod", "Generic Smartphone", "Generic Feature Phone", "iOS-Device",
                              "PlayStation Vita", "Apple Watch"})
_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "Windows Mobile", "Windows CE", "BlackBerry OS",
                        "BlackBerry Tablet OS", "KaiOS", "Firefox OS", "Symbian OS", "Symbian^3", "Bada", "Tizen",
                        "webOS", "Sailfish", "Ubuntu Touch", "HarmonyOS", "watchOS", "MeeGo", "Maemo"})
# Devices ua-parser names that are neither phones nor tablets.
_NOT_PHONES = re.compile(r"TV|Roku|PlayStation|Nintendo|Xbox|Chromecast|Ouya|Kindle|Mac|Spider|Watch")
_DESKTOP_OS = frozenset({"Windows", "Mac OS X", "Mac OS", "macOS", "Linux", "Ubuntu", "Chrome OS", "Chromium OS",
                         "Fedora", "Debian", "Red Hat", "Mint", "Arch Linux", "Gentoo", "Slackware", "SUSE",
                         "openSUSE", "Mandriva", "CentOS", "FreeBSD", "OpenBSD", "NetBSD", "Solaris", "SunOS",
                         "BeOS", "Haiku", "OS/2"})


class Classes(NamedTuple):
    """What one user agent is, as stored in its user_agents row."""

    browser: Optional[str]  # ua-parser's family, "Other" when unknown: "Chrome", "Firefox Mobile", "Googlebot"
    os: Optional[str]       # ua-parser's OS family, "Other" when unknown: "Windows", "Android", "iOS"
    device: Optional[str]   # one of DEVICE_CLASSES
    is_bot: Optional[int]   # 1 for crawlers, tools and libraries, 0 for people's browsers
    # None: not parsed yet (flag_only), or nothing known (the "(other)" row's is_bot).


# ---- the parser: built once per process, on first use ---------------------------------------
_resolver: Optional[Tuple[Callable[..., Any], Any, Any, Callable[[str], Any]]] = None
_build_lock = threading.Lock()


def _reset_after_fork() -> None:
    # A fork while another thread was building would leave the child a lock nobody releases.
    global _build_lock
    _build_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def prepare() -> None:
    """Build ua-parser's matcher now instead of at the first new agent (about 0.2 s of CPU, once
    per process, holding the GIL for most of it): call it at start-up, before serving or forking."""
    _parser()


def _parser() -> Tuple[Callable[..., Any], Any, Any, Callable[[str], Any]]:
    """(resolver, every domain, every domain but the device, the AUTOMATED matcher), built on first use."""
    global _resolver
    resolver = _resolver
    if resolver is None:
        with _build_lock:
            if _resolver is None:
                import ua_parser

                domains = ua_parser.Domain
                # No CachingResolver: the lookup caches already make a second parse of an agent rare.
                _resolver = (ua_parser.BestAvailableResolver(ua_parser.load_lazy_builtins()),
                             domains.ALL, domains.USER_AGENT | domains.OS, _automated_matcher())
            resolver = _resolver
    return resolver


def classify(agent: str) -> Classes:
    """The classes of one user agent string (any text: empty, truncated or with escaped bytes)."""
    return _classified(agent)[0]


def flag_only(agent: str) -> Classes:
    """The bot flag from AUTOMATED alone, without ua-parser's rules (a tenth of classify()'s cost):
    browser and OS unknown (NULL) until the parser runs, device "bot" for a bot, else NULL."""
    if agent == _BUCKET:
        return Classes(*BUCKET_CLASSES)
    if not agent.strip() or _parser()[3](agent) is not None:
        return Classes(None, None, BOT, 1)
    return Classes(None, None, None, 0)


def completed(agent: str, is_bot: Optional[int]) -> Classes:
    """classify(agent), keeping a bot flag the row already has (set when it was created, and
    counted by the rollups since): the parser only fills in what is missing."""
    classes, family = _classified(agent)
    if is_bot is None or is_bot == classes.is_bot:
        return classes
    if is_bot:
        return classes._replace(device=BOT, is_bot=1)
    return classes._replace(device=_device_class(agent, classes.os, family), is_bot=0)


class Classifier:
    """The classes of new agents for one writer: ua-parser for at most ``per_second`` agents a
    second, flag_only() past that, so that a flood of unique agents costs the writer a tenth of
    the parse per agent (docs/agents.md has the figures). ``per_second=None``: no limit."""

    def __init__(self, per_second: Optional[int] = 1_000):
        self.per_second = per_second
        self.parsed = 0          # agents given to ua-parser, in all
        self.flagged = 0         # agents given flag_only() because the second's budget was spent
        self._window_end = 0.0
        self._left = 0

    def __call__(self, agent: str) -> Classes:
        """The classes of a new agent: classify(), or flag_only() once this second's budget is spent."""
        if self.per_second is not None and not self._spend():
            self.flagged += 1
            return flag_only(agent)
        self.parsed += 1
        return classify(agent)

    def complete(self, agent: str, is_bot: Optional[int]) -> Optional[Classes]:
        """completed(agent, is_bot) for a row stored without classes; None once the budget is spent."""
        if self.per_second is not None and not self._spend():
            return None
        self.parsed += 1
        return completed(agent, is_bot)

    def _spend(self) -> bool:
        now = time.monotonic()
        if now >= self._window_end:
            self._window_end = now + 1.0
            self._left = self.per_second
        if self._left <= 0:
            return False
        self._left -= 1
        return True


def _classified(agent: str) -> Tuple[Classes, str]:
    """(classes, ua-parser's device family) of one agent."""
    if agent == _BUCKET:
        return Classes(*BUCKET_CLASSES), UNKNOWN
    if not agent.strip():
        # No agent at all: scripts send an empty header, browsers never do.
        return Classes(UNKNOWN, UNKNOWN, BOT, 1), UNKNOWN
    parser, domains, without_device, automated = _parser()
    automated = automated(agent) is not None
    # The device rules are the slowest third of the parse; a bot's device class is "bot" anyway.
    result = parser(agent, without_device if automated else domains)
    browser = result.user_agent.family if result.user_agent is not None else UNKNOWN
    system = result.os.family if result.os is not None else UNKNOWN
    family = result.device.family if result.device is not None else UNKNOWN
    if (automated or family == "Spider"
            or (browser == UNKNOWN and family == UNKNOWN and (system == UNKNOWN or _COMMENT.search(agent) is None))):
        return Classes(browser, system, BOT, 1), family
    return Classes(browser, system, _device_class(agent, system, family), 0), family


def _automated_matcher() -> Callable[[str], Any]:
    """A function of an agent that is not None when AUTOMATED matches it.

    ua-parser-rs's matcher (built for exactly such rules) finds it in about 0.5 us; Python's re,
    trying each alternative at each position, takes 10 us and more.
    """
    try:
        import ua_parser_rs
    except ImportError:
        return re.compile(AUTOMATED, re.IGNORECASE).search
    return ua_parser_rs.UserAgentExtractor([("(?i)(?:" + AUTOMATED + ")", "bot", None, None, None, None)]).extract


def _device_class(agent: str, system: str, family: str) -> str:
    """desktop, mobile, tablet or other, for an agent that is not a bot."""
    if family in _TABLET_FAMILIES or "Tablet" in agent:
        return TABLET
    if system == "Android" and "Mobile" not in agent:
        # Android tablets' browsers leave "Mobile" out of their agent; phones' put it in.
        return TABLET
    if family in _MOBILE_FAMILIES or system in _MOBILE_OS or "Mobi" in agent:
        return MOBILE
    if system in _DESKTOP_OS or system.startswith("Windows") or "X11" in agent:
        return DESKTOP
    if "MIDP" in agent or (family != UNKNOWN and _NOT_PHONES.search(family) is None):
        # Feature phones (Java ME), and the devices ua-parser names, nearly all of which are phones.
        return MOBILE
    return OTHER


# ---- the database ---------------------------------------------------------------------------
def add_columns(db: sqlite_utils.Database) -> None:
    """Add the class columns to user_agents (schema version 2)."""
    for column, kind in (("browser", str), ("os", str), ("device", str), ("is_bot", int)):
        if column not in db.table("user_agents").columns_dict:
            db.conn.execute(f"ALTER TABLE user_agents ADD COLUMN [{column}] {'TEXT' if kind is str else 'INTEGER'}")


# The columns classify() fills, in Classes order.
COLUMNS = Classes._fields
SET_CLASSES = "UPDATE user_agents SET browser = ?, os = ?, device = ?, is_bot = ? WHERE id = ?"
# Rows per transaction when reclassifying: short write-lock holds beside a live writer.
_CHUNK = 500


def pending(conn: sqlite3.Connection, *, every: bool = False) -> int:
    """How many user_agents rows reclassify() would run the parser over."""
    return conn.execute(f"SELECT count(*) FROM user_agents {'' if every else 'WHERE browser IS NULL'}").fetchone()[0]


def reclassify(conn: sqlite3.Connection, *, every: bool = False) -> Iterator[Tuple[int, int, int]]:
    """Run the parser over the user_agents rows that have no classes yet, keeping a bot flag one
    already has (``every``: over all rows, recomputing every class, corrections included), in
    transactions of a few hundred rows; yields (rows done, rows changed, bot flags changed) after
    each transaction.

    ``conn`` must be in autocommit mode (isolation_level=None).
    """
    last = 0
    while True:
        found: List[tuple] = conn.execute(
            f"SELECT id, name, browser, os, device, is_bot FROM user_agents WHERE id > ? "
            f"{'' if every else 'AND browser IS NULL'} ORDER BY id LIMIT {_CHUNK}", (last,)).fetchall()
        if not found:
            return
        changes = []
        flags = 0
        for row_id, name, *before in found:
            text = name if isinstance(name, str) else "" if name is None else str(name)
            after = classify(text) if every else completed(text, before[3])
            if tuple(before) != tuple(after):
                changes.append((*after, row_id))
                flags += before[3] != after.is_bot
        if changes:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Not every: a row a writer completed meanwhile keeps what it was given.
                conn.executemany(SET_CLASSES + ("" if every else " AND browser IS NULL"), changes)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        last = found[-1][0]
        yield len(found), len(changes), flags
