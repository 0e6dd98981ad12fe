"""Credentials out of what is logged: ``redact_url`` hides a URL's user and password
and the query parameters that carry secrets (InfluxDB 1.x takes ``u``/``p``)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
SECRET_PARAMS = frozenset({"p", "password", "token", "secret", "key", "api_key", "apikey"})
_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


def redact_url(url: str) -> str:
    """``url`` with its userinfo as ``***`` and secret query values as ``***``:
    ``http://user:secret@db:8086/query?p=x`` → ``http://***@db:8086/query?p=***``.
    Never raises: text that does not parse as a URL has any ``…://user@`` masked."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = MASK + "@" + netloc.rpartition("@")[2]
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
                query = urlencode(
                    [(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="*"
                )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return _USERINFO.sub(MASK + "@", url)
