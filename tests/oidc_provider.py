"""panva's oidc-provider (npm ``oidc-provider`` 8.8.1) on a free 127.0.0.1 port,
and a browser-like walk through its device-flow and authorization pages.

``tests/oidc/server.mjs`` is the launcher; this module runs it with Node.js,
waits for its discovery document and answers with extauth provider configs.
``approve_device`` plays the user: it opens the provider's verification page,
types the user code, signs in on the development login page (any login is
accepted) and confirms the consent page, all with one ``httpx.Client`` whose
cookie jar carries the provider's session between pages.
``approve_authorization`` does the same for the web (authorization code) flow:
from the authorize URL extauth redirected to, through login and consent, up
to the provider's redirect back to the client, which it returns unfollowed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import httpx

from tests.live import drain_to, log_text, stop_drained

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
SERVER = OIDC_DIR / "server.mjs"
TIMEOUT = httpx.Timeout(10.0)
MAX_PAGES = 12


class OidcProviderError(RuntimeError):
    """The provider could not be started, or its pages did not behave as expected."""


class Form:
    """One ``<form>`` of a page: where it posts and the inputs it would send."""

    def __init__(self, attrs: dict[str, str]) -> None:
        self.id = attrs.get("id", "")
        self.action = attrs.get("action", "")
        self.method = attrs.get("method", "get").lower()
        self.fields: dict[str, str] = {}
        self.types: dict[str, str] = {}
        # Named submit buttons, (name, value): the one clicked is sent with the form.
        self.buttons: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return (f"Form(id={self.id!r}, action={self.action!r}, fields={sorted(self.fields)}, "
                f"buttons={self.buttons})")

    def submit(self, base_url: str, button: str | None = None) -> tuple[str, dict[str, str]]:
        """Where a browser posts this form (from page ``base_url``) and the data it sends,
        with the named button's value if ``button`` (its value) is given."""
        data = dict(self.fields)
        if button is not None:
            names = [name for name, value in self.buttons if value == button]
            if len(names) != 1:
                raise OidcProviderError(f"no single button with value {button!r} in {self!r}")
            data[names[0]] = button
        # No action (or an empty one): the page's own URL, query included.
        return urljoin(base_url, self.action) if self.action else base_url, data


class FormParser(HTMLParser):
    """Collects the forms of a page, their ``<input>`` fields and named
    ``<button>`` values, the links (``<a href>``) and the ``<title>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.links: list[tuple[str, str]] = []  # (href, text)
        self.title = ""
        self._form: Form | None = None
        self._in_title = False
        self._link: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = Form(a)
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            self._form.fields[a["name"]] = a.get("value", "")
            self._form.types[a["name"]] = a.get("type", "text").lower()
        elif (tag == "button" and self._form is not None and a.get("name")
              and a.get("type", "submit").lower() == "submit"):
            self._form.buttons.append((a["name"], a.get("value", "")))
        elif tag == "a" and "href" in a:
            self._link = [a["href"], ""]
            self.links.append(("", ""))
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "a" and self._link is not None:
            self.links[-1] = (self._link[0], self._link[1].strip())
            self._link = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._link is not None:
            self._link[1] += data


def parse_page(html: str) -> FormParser:
    parser = FormParser()
    parser.feed(html)
    parser.close()
    return parser


def _read_line(stream: IO[bytes], deadline: float) -> str:
    """One line from a child's pipe, or "" if none came before the deadline or EOF."""
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while not buf.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                return ""
            chunk = os.read(stream.fileno(), 1)
            if not chunk:
                return ""
            buf += chunk
    return buf.decode(errors="replace").strip()


class OidcProvider:
    """A running oidc-provider; ``issuer`` is its base URL.

    ``rotate_refresh`` makes the provider rotate refresh tokens on every use.
    ``redirect_uris`` are the client's registered redirect URIs (the web
    flow's callbacks); without them, a placeholder nobody listens on.
    """

    def __init__(self, log_dir: Path, client_id: str = "extauth",
                 client_secret: str | None = None, rotate_refresh: bool = False,
                 redirect_uris: Sequence[str] = ()) -> None:
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.rotate_refresh = rotate_refresh
        self.redirect_uris = list(redirect_uris)
        self.log = log_dir / "oidc-provider.log"
        self.issuer = ""
        self.discovery: dict[str, Any] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._drain: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    @staticmethod
    def node() -> str:
        node = shutil.which("node")
        if node is None:
            raise OidcProviderError(
                "Node.js is not installed (no 'node' on PATH): the e2e tests run panva's "
                "oidc-provider 8.8.1 and need Node.js 18 or later (20 is what they are run with)."
            )
        return node

    @staticmethod
    def install() -> None:
        """``npm ci`` in tests/oidc, only if its node_modules is missing."""
        if (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
            return
        npm = shutil.which("npm")
        if npm is None:
            raise OidcProviderError(
                f"{OIDC_DIR / 'node_modules'} is missing and npm is not installed: "
                "run 'npm ci' in tests/oidc."
            )
        try:
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"], cwd=OIDC_DIR,
                capture_output=True, text=True, timeout=300,
            )
        except subprocess.TimeoutExpired:
            raise OidcProviderError("'npm ci' in tests/oidc did not finish within 300s") from None
        if result.returncode != 0:
            raise OidcProviderError(
                f"'npm ci' in tests/oidc failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def start(self, timeout: float = 20.0) -> OidcProvider:
        node = self.node()
        self.install()
        env = {
            **os.environ,
            "PORT": "0",
            "CLIENT_ID": self.client_id,
            "CLIENT_SECRET": self.client_secret,
            "ROTATE_REFRESH": "1" if self.rotate_refresh else "0",
        }
        env.pop("NODE_OPTIONS", None)
        env.pop("REDIRECT_URI", None)
        env.pop("REDIRECT_URIS", None)
        if self.redirect_uris:
            env["REDIRECT_URIS"] = " ".join(self.redirect_uris)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [node, str(SERVER)], cwd=OIDC_DIR, env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = _read_line(self.proc.stdout, deadline)
        if not line.startswith("listening "):
            self.stop()
            raise OidcProviderError(
                f"oidc-provider did not say 'listening <port>' within {timeout}s "
                f"(got {line!r}):\n{self.output()}"
            )
        # Anything printed later goes to the log, so that the pipe never fills up.
        self._drain = drain_to(self.proc.stdout, self.log)
        self.issuer = f"http://127.0.0.1:{int(line.split()[1])}"
        self.discovery = self._wait_for_discovery(deadline)
        if self.discovery.get("issuer") != self.issuer:
            self.stop()
            raise OidcProviderError(
                f"discovery says issuer {self.discovery.get('issuer')!r}, expected {self.issuer!r}"
            )
        return self

    def _wait_for_discovery(self, deadline: float) -> dict[str, Any]:
        url = f"{self.issuer}/.well-known/openid-configuration"
        last = ""
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                break
            try:
                r = httpx.get(url, timeout=2)
                if r.status_code == 200:
                    body: dict[str, Any] = r.json()
                    return body
                last = f"HTTP {r.status_code}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        self.stop()
        raise OidcProviderError(f"{url} did not answer 200 ({last}):\n{self.output()}")

    def output(self) -> str:
        return log_text(self.log)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        # Closing stdin is the launcher's cue to exit; SIGTERM, then SIGKILL, if not.
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        stop_drained(proc, self._drain, timeout=5)

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what extauth needs ----------------------------------------------------

    def endpoint(self, name: str) -> str:
        """An endpoint URL from the discovery document, e.g. ``token_endpoint``."""
        url = self.discovery.get(name)
        if not isinstance(url, str) or not url:
            raise OidcProviderError(f"the discovery document has no {name!r}")
        return url

    def provider_config(self, **overrides: Any) -> dict[str, Any]:
        """A raw extauth provider config (Coder's keys) for this provider."""
        config: dict[str, Any] = {
            "id": "oidc",
            "type": "oidc",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "auth_url": self.endpoint("authorization_endpoint"),
            "token_url": self.endpoint("token_endpoint"),
            "validate_url": self.endpoint("userinfo_endpoint"),
            "device_flow": True,
            "device_code_url": self.endpoint("device_authorization_endpoint"),
            "revoke_url": self.endpoint("revocation_endpoint"),
            "scopes": ["openid", "profile", "offline_access"],
        }
        config.update(overrides)
        return config

    def web_provider_config(self, **overrides: Any) -> dict[str, Any]:
        """A provider config for the web flow only (no device flow).

        The authorize URL carries ``prompt=consent``: OpenID Connect Core 11
        makes the provider ignore ``offline_access`` (so: no refresh token)
        unless the request asks for consent, and oidc-provider does exactly
        that. extauth keeps the auth URL's own query parameters.
        """
        config = self.provider_config(
            device_flow=False,
            auth_url=f"{self.endpoint('authorization_endpoint')}?prompt=consent",
        )
        del config["device_code_url"]
        config.update(overrides)
        return config

    def userinfo(self, access_token: str) -> httpx.Response:
        """The provider's userinfo endpoint, called with ``access_token`` directly."""
        return httpx.get(
            self.endpoint("userinfo_endpoint"),
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            timeout=TIMEOUT,
        )

    # -- the user's browser ------------------------------------------------------

    def approve_device(self, user_code: str, login: str = "alice",
                       verification_uri: str | None = None) -> list[str]:
        """Approve ``user_code`` on the provider's own pages, as ``login``.

        Returns the pages seen (method, path and status), for diagnostics.
        """
        seen: list[str] = []
        with httpx.Client(timeout=TIMEOUT, follow_redirects=True,
                          headers={"User-Agent": "extauth-e2e-browser"}) as browser:
            r = browser.get(verification_uri or f"{self.issuer}/device")
            for _ in range(MAX_PAGES):
                seen.extend(f"{h.request.method} {h.url.path} {h.status_code}" for h in r.history)
                seen.append(f"{r.request.method} {r.url.path} {r.status_code}")
                page = parse_page(r.text)
                if r.status_code != 200:
                    raise OidcProviderError(
                        f"the provider answered HTTP {r.status_code} on {r.url.path} "
                        f"(pages: {seen}):\n{r.text[:2000]}"
                    )
                if page.title.strip() == "Sign-in Success":
                    return seen
                form = self._pick_form(page, seen, r.text)
                data = dict(form.fields)
                if form.id == "op.deviceInputForm":
                    data["user_code"] = user_code
                elif data.get("prompt") == "login":
                    data["login"] = login
                    data["password"] = "any password"
                elif data.get("prompt") != "consent" and data.get("confirm") != "yes":
                    raise OidcProviderError(f"unexpected form {form!r} on {r.url.path}")
                action = urljoin(str(r.url), form.action)
                if form.method != "post":
                    raise OidcProviderError(f"form {form!r} on {r.url.path} is not a POST")
                r = browser.post(action, data=data)
        raise OidcProviderError(f"no success page after {MAX_PAGES} pages: {seen}")

    def approve_authorization(self, url: str, login: str = "alice",
                              browser: httpx.Client | None = None,
                              deny: bool = False) -> str:
        """Play the user on the provider's pages, from the authorize ``url``.

        Signs in as ``login`` (any login is an account) and consents, or, with
        ``deny``, cancels on the first page (the provider answers
        ``access_denied``). ``browser`` is the caller's client, whose cookie jar
        keeps both sites' cookies; redirects are followed only while they stay on
        the provider. Returns the URL of the provider's redirect back to the
        client (its registered redirect URI with ``code`` and ``state``, or
        ``error``), without requesting it.
        """
        own = browser is None
        client = browser or httpx.Client(timeout=TIMEOUT,
                                         headers={"User-Agent": "extauth-e2e-browser"})
        seen: list[str] = []
        try:
            r = client.get(url, follow_redirects=False)
            for _ in range(MAX_PAGES):
                seen.append(f"{r.request.method} {r.url.path} {r.status_code}")
                if r.is_redirect:
                    target = urljoin(str(r.url), r.headers["location"])
                    if not self._on_provider(target):
                        return target
                    r = client.get(target, follow_redirects=False)
                    continue
                if r.status_code != 200:
                    raise OidcProviderError(
                        f"the provider answered HTTP {r.status_code} on {r.url.path} "
                        f"(pages: {seen}):\n{r.text[:2000]}"
                    )
                page = parse_page(r.text)
                if deny:
                    aborts = [href for href, _ in page.links if href.endswith("/abort")]
                    if len(aborts) != 1:
                        raise OidcProviderError(
                            f"no single cancel link on {r.url.path} (links: {page.links})")
                    r = client.get(urljoin(str(r.url), aborts[0]), follow_redirects=False)
                    continue
                form = self._pick_form(page, seen, r.text)
                action, data = form.submit(str(r.url))
                if data.get("prompt") == "login":
                    data["login"] = login
                    data["password"] = "any password"
                elif data.get("prompt") != "consent":
                    raise OidcProviderError(f"unexpected form {form!r} on {r.url.path}")
                if form.method != "post":
                    raise OidcProviderError(f"form {form!r} on {r.url.path} is not a POST")
                r = client.post(action, data=data, follow_redirects=False)
        finally:
            if own:
                client.close()
        raise OidcProviderError(f"no redirect back to the client after {MAX_PAGES} pages: {seen}")

    def _on_provider(self, url: str) -> bool:
        ours, theirs = urlsplit(self.issuer), urlsplit(url)
        return (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc)

    @staticmethod
    def _pick_form(page: FormParser, seen: list[str], html: str) -> Form:
        forms = [f for f in page.forms if f.action]
        if len(forms) != 1:
            raise OidcProviderError(
                f"expected one form on page {page.title.strip()!r}, found {forms} "
                f"(pages: {seen}):\n{html[:2000]}"
            )
        return forms[0]
