"""Credentials kept out of logs and status: the secret parts of a URL, and the URL with them replaced."""

from __future__ import annotations

_SECRET_QUERY_FIELDS = frozenset({
    "user", "username", "login", "password", "pass", "passwd", "pwd", "token", "access_token", "auth", "key",
    "apikey", "api_key", "secret", "signature", "sig",
})
"""Query parameters that carry credentials in camera URLs (e.g. `...?user=admin&password=...`)."""


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL (password, user name, credential query values), to scrub from text."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    secrets = [value for value in (parts.password, parts.username) if value]
    secrets += [value for name, value in parse_qsl(parts.query) if name.lower() in _SECRET_QUERY_FIELDS and value]
    return secrets


def redact_url(url: str) -> str:
    """The URL with its user name, password and credential query parameters replaced, for logs and status."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is not None or parts.username is not None:
        host = parts.hostname or ""
        if ":" in host:  # IPv6
            host = f"[{host}]"
        if parts.port:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=f"***@{host}")
    if parts.query:
        fields = parse_qsl(parts.query, keep_blank_values=True)
        if any(name.lower() in _SECRET_QUERY_FIELDS for name, _ in fields):
            redacted = [(name, "***" if name.lower() in _SECRET_QUERY_FIELDS else value) for name, value in fields]
            parts = parts._replace(query=urlencode(redacted, safe="*"))
    return urlunsplit(parts)
