"""Pieces of the web (authorization code) flow: state, PKCE, redirects."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from urllib.parse import urlsplit

STATE_TTL = timedelta(minutes=10)


def hash_state(state: str) -> str:
    """States are stored hashed, like session secrets."""
    return hashlib.sha256(state.encode()).hexdigest()


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def same_site(redirect: str | None) -> str:
    """Only a path and query on this site: never an open redirect."""
    if not redirect:
        return ""
    parts = urlsplit(redirect)
    path = parts.path
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return ""
    return f"{path}?{parts.query}" if parts.query else path
