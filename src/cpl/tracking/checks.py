"""Checks of a tracking URI before any run is created: its syntax, and whether a server answers in time.

One line per problem, naming ``tracking.uri``, the value and what is allowed: a malformed URI, an
unknown scheme, a SQLite file that cannot be created, a server that refuses the connection, does
not answer within ``tracking.timeout_s`` or answers with an HTTP error (5xx).
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from ..config.errors import ConfigError
from .uri import tracking_uri

__all__ = ["check_uri", "SCHEMES"]

#: the stores MLflow can open (``postgresql+psycopg2://`` etc. count by their first part)
SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def _bad(uri: str, allowed: str) -> ConfigError:
    return ConfigError(f"Invalid value for 'tracking.uri': got {uri!r}; allowed: {allowed}")


def check_uri(uri: str | None, timeout_s: float) -> str:
    """The resolved tracking URI, after checking it; raises :class:`ConfigError` in one line.

    >>> check_uri("sqlite:///tmp/cpl-doctest/mlflow.db", 1.0)
    'sqlite:///tmp/cpl-doctest/mlflow.db'
    >>> check_uri("sqlite:/mlflow.db", 1.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cpl.config.errors.ConfigError: Invalid value for 'tracking.uri': got 'sqlite:/mlflow.db'; allowed: ...
    """
    uri = tracking_uri(uri)
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise _bad(uri, f"a well-formed URI ({exc})") from None
    scheme = parts.scheme.split("+")[0].lower()
    if not parts.scheme or (len(parts.scheme) == 1 and os.name == "nt"):
        return uri  # a local folder (MLflow's file store)
    if scheme not in SCHEMES:
        raise _bad(uri, f"a URI with scheme {', '.join(SCHEMES)} (e.g. sqlite:///mlruns/mlflow.db)")
    if scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if not path or path.endswith("/"):
            raise _bad(uri, "sqlite:///PATH (three slashes, then a file path)")
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _bad(uri, f"a SQLite file in a folder this process can create ({exc.strerror or exc})") from None
    elif scheme in ("http", "https"):
        if not parts.hostname:
            raise _bad(uri, "http(s)://HOST[:PORT] of an MLflow tracking server")
        _probe(uri, parts.hostname, port or (443 if scheme == "https" else 80), timeout_s)
    return uri


def _probe(uri: str, host: str, port: int, timeout_s: float) -> None:
    """The server must accept a connection and answer ``GET /health`` within ``timeout_s``."""
    allowed = f"an MLflow tracking server that answers within tracking.timeout_s={timeout_s:g} s"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise _bad(uri, f"{allowed} (it answered HTTP {exc.code} {exc.reason})") from None
    except (socket.timeout, TimeoutError):
        raise _bad(uri, f"{allowed} (no answer within {timeout_s:g} s)") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _bad(uri, f"{allowed} (no answer within {timeout_s:g} s)") from None
        raise _bad(uri, f"{allowed} ({getattr(reason, 'strerror', None) or reason})") from None
