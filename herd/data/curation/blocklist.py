"""Unsafe-domain blocklist with subdomain matching.

API:
    bl = DomainBlocklist.default()            # the small list shipped in wordlists/blocked_domains.txt
    bl = DomainBlocklist.from_file(path)      # a user file (same format), or .merge() both
    bl.is_blocked(url) -> reason | None       # e.g. "adult:example-adult.com"

File format: one domain a line, optionally followed by whitespace and a category (default
"blocked"); ``#`` starts a comment. A listed domain blocks itself and every subdomain
(``videos.example-adult.com``), but not look-alikes (``notexample-adult.com``). URLs without a
scheme ("example.com/page"), upper case, ports, credentials, a trailing dot and IDN host names
(compared in their punycode form) are handled. A URL that cannot be parsed is not blocked (the
reason would be a lie); the pipeline's URL checks deal with it.

Why: Llama 3 (Dubey et al. 2024, section 3.1.1) filters "domains that are ranked as harmful by
internal Meta safety standards, and domains that are known to contain adult content"; the
shipped list holds a few example entries (reserved/example-style names plus well-known test
domains), a real deployment loads its own list with ``from_file``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["DomainBlocklist", "BlocklistError", "DEFAULT_LIST"]

DEFAULT_LIST = Path(__file__).parent / "wordlists" / "blocked_domains.txt"


class BlocklistError(ValueError):
    """A blocklist file is missing or has a malformed line."""


def _normalize_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return host


def host_of(url: str) -> str | None:
    """Lower-case host name of a URL (scheme optional), or None when there is none."""
    if not url or not isinstance(url, str):
        return None
    url = url.strip()
    if "://" not in url:
        url = "//" + url
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return _normalize_host(host) if host else None


class DomainBlocklist:
    """A set of blocked domains, each with a category; matching covers subdomains."""

    def __init__(self, domains: dict[str, str] | None = None) -> None:
        self.domains: dict[str, str] = {}
        for domain, category in (domains or {}).items():
            self.add(domain, category)

    def add(self, domain: str, category: str = "blocked") -> None:
        host = host_of(domain)
        if not host or "." not in host:
            raise BlocklistError(f"not a domain name: {domain!r}")
        self.domains[host] = category

    @classmethod
    def from_file(cls, path: str | Path) -> DomainBlocklist:
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise BlocklistError(f"cannot read blocklist {path}: {exc}") from exc
        blocklist = cls()
        for number, raw in enumerate(lines, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) > 2:
                raise BlocklistError(f"{path}:{number}: expected 'domain [category]', got {raw!r}")
            try:
                blocklist.add(parts[0], parts[1] if len(parts) == 2 else "blocked")
            except BlocklistError as exc:
                raise BlocklistError(f"{path}:{number}: {exc}") from None
        return blocklist

    @classmethod
    def default(cls) -> DomainBlocklist:
        return cls.from_file(DEFAULT_LIST)

    def merge(self, other: DomainBlocklist) -> DomainBlocklist:
        merged = DomainBlocklist()
        merged.domains = {**self.domains, **other.domains}
        return merged

    def __len__(self) -> int:
        return len(self.domains)

    def is_blocked(self, url: str) -> str | None:
        """ "<category>:<listed domain>" when the URL's host or a parent domain is listed, else None."""
        host = host_of(url)
        if not host:
            return None
        labels = host.split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            category = self.domains.get(candidate)
            if category is not None:
                return f"{category}:{candidate}"
        return None
