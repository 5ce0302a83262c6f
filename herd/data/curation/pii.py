"""PII scrubbing for web text: emails, IP addresses, phone numbers and secrets, replaced by tokens.

API:
    scrub_pii(text, *, public_ips_only=True) -> (scrubbed_text, counts)

Replacement strings (stable, so that downstream code and reports can count them):
    EMAIL      = "<EMAIL>"        user@example.com
    IP_ADDRESS = "<IP_ADDRESS>"   IPv4 and IPv6 (validated by ``ipaddress``)
    PHONE      = "<PHONE>"        +1 415 555 0132, +44 20 7946 0958, (415) 555-0132, 030 1234567,
                                  06 12 34 56 78
    SECRET     = "<SECRET>"       AWS access keys (AKIA...), AWS secret keys after their key name,
                                  GitHub tokens (ghp_..., github_pat_...), private-key PEM blocks,
                                  Slack/Google/Stripe/OpenAI-style keys, JWTs, and the value of
                                  ``api_key = ...``/``password: ...`` style assignments when it
                                  looks random (16+ characters mixing letters and digits)
``counts`` maps "email", "ip_address", "phone", "secret" to the number of replacements.

Why these rules: Llama 3 (Dubey et al. 2024, section 3.1.1) removes "personally identifiable
information"; like datatrove's PIIFormatter, only *public* IP addresses are replaced by default,
since 127.0.0.1 or 192.168.0.1 identify nobody and are common in technical text. Version
numbers (3.11.7), years, dates, times and ordinary numbers are left alone: the phone patterns
need a ``+`` country code, a parenthesized area code, the North-American 3-3-4 grouping, or a
national trunk ``0`` followed by digit groups.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["scrub_pii", "EMAIL", "IP_ADDRESS", "PHONE", "SECRET"]

EMAIL = "<EMAIL>"
IP_ADDRESS = "<IP_ADDRESS>"
PHONE = "<PHONE>"
SECRET = "<SECRET>"

_SECRET_PATTERNS = [
    re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
        re.DOTALL,
    ),
    re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"),
    re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}\b"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{50,255}\b"),
    re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])"),
    re.compile(r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}\b"),
    re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{32,}"),
    re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
]
# key name, separator, optional quote, value: only the value is replaced
_ASSIGNMENT = re.compile(
    r"(?i)(\b[\w.-]*(?:secret|api[_-]?key|access[_-]?key|auth[_-]?token|token|passwd|password)[\w.-]*[\"']?\s*[:=]\s*[\"']?)"
    r"([A-Za-z0-9/+_\-=.]{16,})"
)
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b"
)
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)"
)
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:|:){2,7}(?:[0-9A-Fa-f]{1,4}|:)(?:%\w+)?(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[\s.\-]?(?:\(0?\d{1,4}\)[\s.\-]?)?\d{1,4}(?:[\s.\-]?\d{2,4}){1,4}"  # +CC international
    r"|(?:1\s?)?\(\d{3}\)\s?\d{3}[\s.\-]\d{4}"  # (415) 555-0132
    r"|(?:1[.\-])?\d{3}[.\-]\d{3}[.\-]\d{4}"  # 415-555-0132, 1-800-555-0199
    r"|0\d(?:[\s.]\d{2}){4}"  # 06 12 34 56 78 (fr)
    r"|0\d{1,4}[\s/\-]\d{3,4}[\s\-]?\d{3,5}"  # 030 1234567, 020 7946 0958
    r")(?![\w])"
)


def _looks_random(value: str) -> bool:
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value) and len(set(value)) >= 8


def _valid_ip(candidate: str, public_only: bool) -> bool:
    try:
        addr = ipaddress.ip_address(candidate.split("%")[0])
    except ValueError:
        return False
    return addr.is_global if public_only else True


def scrub_pii(text: str, *, public_ips_only: bool = True) -> tuple[str, dict[str, int]]:
    """Replace PII in ``text`` by the tokens above; returns the new text and counts per kind."""
    counts = {"email": 0, "ip_address": 0, "phone": 0, "secret": 0}
    if not text:
        return text, counts

    def sub_secret(_m: re.Match[str]) -> str:
        counts["secret"] += 1
        return SECRET

    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(sub_secret, text)

    def sub_assignment(m: re.Match[str]) -> str:
        if SECRET in m.group(2) or not _looks_random(m.group(2)):
            return m.group(0)
        counts["secret"] += 1
        return m.group(1) + SECRET

    text = _ASSIGNMENT.sub(sub_assignment, text)

    def sub_email(_m: re.Match[str]) -> str:
        counts["email"] += 1
        return EMAIL

    text = _EMAIL.sub(sub_email, text)

    def sub_ip(m: re.Match[str]) -> str:
        if not _valid_ip(m.group(0), public_ips_only):
            return m.group(0)
        counts["ip_address"] += 1
        return IP_ADDRESS

    text = _IPV6.sub(sub_ip, text)
    text = _IPV4.sub(sub_ip, text)

    def sub_phone(m: re.Match[str]) -> str:
        digits = sum(c.isdigit() for c in m.group(0))
        if not 7 <= digits <= 15:  # E.164 allows at most 15 digits
            return m.group(0)
        counts["phone"] += 1
        return PHONE

    text = _PHONE.sub(sub_phone, text)
    return text, counts
