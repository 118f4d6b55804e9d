"""What is never stored, what is redacted, and how client addresses are reduced.

Everything here runs on the writer thread, never on the event loop.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Iterable, Optional, Sequence, Tuple, Union

# Never stored, even when asked for as an extra header.
NEVER_STORED_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})

# Query parameter names are split into words ("X-Amz-Signature" -> x, amz, signature;
# "accessToken" -> access, token). A word in this set, or a word ending in one of the
# SECRET_SUFFIXES ("apikey", "authtoken"), marks the value secret.
DEFAULT_SECRET_PARAMS = (
    "token", "key", "secret", "password", "passwd", "pwd", "session", "sid", "sig",
    "signature", "code", "auth", "credential", "credentials", "otp", "jwt", "nonce",
)
SECRET_SUFFIXES = ("token", "key", "secret", "password", "signature", "session")
REDACTED = "REDACTED"

_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

IpNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class QueryRedactor:
    """Replace the values of secret-looking query parameters, keeping names and order."""

    def __init__(self, extra_names: Iterable[str] = ()):
        self.words = frozenset(DEFAULT_SECRET_PARAMS) | {n.lower() for n in extra_names}
        self.exact = frozenset(n.lower() for n in extra_names)

    def is_secret(self, name: str) -> bool:
        lowered = name.lower()
        if lowered in self.exact:
            return True
        for word in _WORDS.findall(name):
            word = word.lower()
            if word in self.words or word.endswith(SECRET_SUFFIXES):
                return True
        return False

    def redact(self, query: str) -> str:
        if not query:
            return query
        parts = query.split("&")
        changed = False
        for i, part in enumerate(parts):
            name, eq, value = part.partition("=")
            if eq and value and self.is_secret(_unquote_name(name)):
                parts[i] = f"{name}={REDACTED}"
                changed = True
        return "&".join(parts) if changed else query

    def redact_query(self, query: str) -> str:
        """A raw query string, redacted, with the leading "?" that 0.1.1 stored."""
        return "?" + self.redact(query)

    def redact_url(self, url: str) -> str:
        """Redact the query part of a full URL (a Referer), leaving the rest."""
        base, q, rest = url.partition("?")
        if not q:
            return url
        query, hash_, fragment = rest.partition("#")
        return f"{base}?{self.redact(query)}{hash_}{fragment}"


def _unquote_name(name: str) -> str:
    if "%" in name or "+" in name:
        from urllib.parse import unquote_plus

        return unquote_plus(name)
    return name


class AddressPolicy:
    """Reduce a client address: "truncate" (IPv4 /24, IPv6 /48), "full", or "none" (not stored)."""

    MODES = ("truncate", "full", "none")

    def __init__(self, mode: str = "truncate", ipv4_prefix: int = 24, ipv6_prefix: int = 48):
        if mode not in self.MODES:
            raise ValueError(f'client_ip={mode!r}: expected one of "truncate", "full", "none"')
        self.mode = mode
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix

    def reduce(self, address: Optional[str]) -> Optional[str]:
        if address is None or self.mode == "none":
            return None
        if self.mode == "full":
            return address
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            # Not an IP (a unix socket path, a test client name): keep nothing identifying.
            return None
        prefix = self.ipv4_prefix if ip.version == 4 else self.ipv6_prefix
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


class TrustedProxies:
    """Resolve the client behind trusted proxies from Forwarded / X-Forwarded-For, else None."""

    def __init__(self, proxies: Sequence[str] = ()):
        self.networks: Tuple[IpNetwork, ...] = tuple(ipaddress.ip_network(p, strict=False) for p in proxies)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: Optional[str]) -> bool:
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def resolve(self, peer: Optional[str], forwarded: Optional[str], x_forwarded_for: Optional[str]) -> Optional[str]:
        """The right-most address that is not a trusted proxy, walking back from the socket peer."""
        if not self.trusts(peer):
            return None
        hops = _forwarded_for(forwarded) if forwarded else [h.strip() for h in (x_forwarded_for or "").split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return _strip_port(hop)
        return None


def _forwarded_for(value: str):
    hops = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, v = pair.strip().partition("=")
            if name.lower() == "for" and v:
                hops.append(v.strip('"'))
    return hops


def _strip_port(hop: str) -> str:
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop
