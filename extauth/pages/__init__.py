"""Server-rendered pages for people in a browser.

The HTML comes from Jinja2 templates (``templates/``, autoescaped); the look
from our own stylesheet and the device flow's polling from one small script
of our own (``static/``), served at ``/assets/<name>``: no build step, no CDN,
nothing fetched from elsewhere, so the pages work offline. Every page carries
``SECURITY_HEADERS``, whose Content-Security-Policy lets the browser run only
those two files.

A page never holds a token or a secret: the session travels in the HttpOnly
``coder_session_token`` cookie, which only the sign-in form sets, and the
script calls the JSON API with it. ``views`` gathers what the pages show.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape

from extauth.errors import CrossSiteError, ExtauthError
from extauth.webflow import same_site

HERE = Path(__file__).resolve().parent
HOME = "/external-auth"
SIGN_IN = "/login"
# Query parameters that carry a session token: never copied into another URL.
TOKEN_PARAMS = frozenset({"coder_session_token", "access_token"})

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ASSET_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_ASSETS = {p.name: p for p in (HERE / "static").iterdir() if p.suffix in _ASSET_TYPES}


def render(template: str, **context: object) -> str:
    """The named template rendered with ``context``."""
    return _ENV.get_template(template).render(**context)


def error_page(err: ExtauthError) -> str:
    """An error as a person reads it: the same message and detail as the JSON."""
    return render("error.html", error=err)


@dataclass(frozen=True)
class Asset:
    """A static file of the pages."""

    body: bytes
    content_type: str


def asset(name: str) -> Asset | None:
    """The static file ``name``, or None when there is no such file."""
    path = _ASSETS.get(name)
    return None if path is None else _read(path)


@functools.cache  # only the files of static/: a few kilobytes, read once
def _read(path: Path) -> Asset:
    return Asset(path.read_bytes(), _ASSET_TYPES[path.suffix])


def after_sign_in(redirect: str | None) -> str:
    """Where to go once signed in: ``redirect`` if it is on this site."""
    return same_site(redirect) or HOME


def sign_in_url(path: str, query: str) -> str:
    """The sign-in page that comes back to ``path?query``, less any token in it."""
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in TOKEN_PARAMS]
    back = f"{path}?{urlencode(kept)}" if kept else path
    return f"{SIGN_IN}?redirect={quote(back, safe='/')}"


def refuse_cross_site(origin: str | None, fetch_site: str | None, host: str | None,
                      access_url: str) -> None:
    """Raise ``CrossSiteError`` when a form post comes from another site."""
    if is_cross_site(origin, fetch_site, host, access_url):
        raise CrossSiteError()


def secure_cookie(access_url: str) -> bool:
    """Whether the session cookie is Secure: when the site is served over https."""
    return access_url.startswith("https://")


def is_cross_site(origin: str | None, fetch_site: str | None, host: str | None,
                  access_url: str) -> bool:
    """Whether a form post comes from another site.

    ``Sec-Fetch-Site`` (sent by current browsers) decides when present. Else a
    present ``Origin`` must be this site: the access URL's origin, or the
    origin of the Host the browser addressed. A request with neither is not a
    browser's cross-site form post (browsers send ``Origin`` on every POST).
    """
    if fetch_site:
        return fetch_site.strip().lower() not in ("same-origin", "none")
    if origin is None:
        return False
    theirs = urlsplit(origin.strip())
    if not theirs.scheme or not theirs.netloc:  # "null", or garbage
        return True
    ours = urlsplit(access_url)
    if (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc):
        return False
    return not host or theirs.netloc != host
