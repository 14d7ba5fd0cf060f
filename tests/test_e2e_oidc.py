"""extauth end to end against panva's oidc-provider 8.8.1 (Node.js) on 127.0.0.1.

extauth runs as users run it (``extauth serve`` in a subprocess, see
``tests/live.py``); the provider is a real OpenID Provider with the RFC 8628
device flow, the authorization code flow with PKCE S256 required,
client_secret_basic, userinfo and RFC 7009 revocation
(``tests/oidc/server.mjs``). The user approves the device on the provider's own
pages (``OidcProvider.approve_device``).

The web flow tests drive one ``httpx.Client`` as the user's browser, across
both sites: it opens extauth's callback, goes through the provider's login and
consent pages (``OidcProvider.approve_authorization``), and brings the
provider's answer back to the callback. Each of them starts its own provider
whose client has the live extauth's callback as its only redirect URI.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from tests.live import LiveServer
from tests.oidc_provider import OidcProvider

pytestmark = pytest.mark.e2e
API = "/api/v2/external-auth"
CALLBACK = "/external-auth/oidc/callback"
MAX_SLOW_DOWNS = 3


@pytest.fixture(scope="session")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """oidc-provider with one confidential client, for the whole session."""
    provider = OidcProvider(tmp_path_factory.mktemp("oidc")).start()
    yield provider
    provider.stop()


def extauth(tmp_path: Path, oidc: OidcProvider, **overrides: object) -> LiveServer:
    return LiveServer(tmp_path, [oidc.provider_config(**overrides)]).start()


def json_of(r: httpx.Response) -> object:
    assert r.headers["content-type"].split(";")[0].strip() == "application/json", r.headers
    return r.json()


def stored_tokens(db: Path, provider_id: str = "oidc") -> tuple[str, str]:
    """The (access, refresh) tokens extauth stored for the only link of ``provider_id``."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT access_token, refresh_token FROM external_auth_links WHERE provider_id = ?",
            (provider_id,),
        ).fetchall()
    conn.close()
    assert len(rows) == 1, rows
    access, refresh = rows[0]
    return str(access), str(refresh or "")


def test_discovery_endpoints(oidc: OidcProvider) -> None:
    """The endpoint paths oidc-provider 8.8.1 publishes, which the config uses."""
    config = oidc.provider_config()
    base = oidc.issuer
    assert {k: config[k] for k in
            ("auth_url", "token_url", "validate_url", "device_code_url", "revoke_url")} == {
        "auth_url": f"{base}/auth",
        "token_url": f"{base}/token",
        "validate_url": f"{base}/me",
        "device_code_url": f"{base}/device/auth",
        "revoke_url": f"{base}/token/revocation",
    }
    assert "client_secret_basic" in oidc.discovery["token_endpoint_auth_methods_supported"]
    assert {"openid", "profile", "offline_access"} <= set(oidc.discovery["scopes_supported"])


def test_device_flow_link_validate_list_unlink(tmp_path: Path, oidc: OidcProvider) -> None:
    server = extauth(tmp_path, oidc)
    try:
        headers = {"Coder-Session-Token": server.token("alice")}
        with httpx.Client(base_url=server.url, headers=headers, timeout=15) as c:
            # 1. extauth asks the provider for a device code.
            r = c.get(f"{API}/oidc/device")
            assert r.status_code == 200, (r.text, server.output())
            device = json_of(r)
            assert isinstance(device, dict)
            assert set(device) == {"device_code", "user_code", "verification_uri",
                                   "expires_in", "interval"}
            assert device["device_code"] and device["user_code"]
            assert device["verification_uri"] == f"{oidc.issuer}/device"
            assert device["expires_in"] == 600
            # oidc-provider sends no interval; extauth answers RFC 8628's default.
            assert device["interval"] == 5
            exchange = {"device_code": device["device_code"]}

            # 2. Nobody approved yet: the provider says authorization_pending.
            r = c.post(f"{API}/oidc/device", json=exchange)
            assert r.status_code == 400, r.text
            assert json_of(r) == {"message": "Failed to exchange device code.",
                                  "detail": "authorization_pending"}

            # 3. The user approves on the provider's own pages.
            pages = oidc.approve_device(device["user_code"], login="alice",
                                        verification_uri=device["verification_uri"])
            assert pages[-1].endswith(" 200"), pages

            # 4. The exchange now succeeds (waiting out slow_down, as RFC 8628 3.5 says).
            for _ in range(MAX_SLOW_DOWNS):
                r = c.post(f"{API}/oidc/device", json=exchange)
                if r.status_code == 400 and r.json().get("detail") == "slow_down":
                    time.sleep(device["interval"])
                    continue
                break
            assert r.status_code == 204, (r.text, server.output())
            assert r.content == b""

            access, refresh = stored_tokens(server.db)
            assert access and refresh, "the device grant asked for offline_access"

            # 5. extauth validates the token at the userinfo endpoint.
            r = c.get(f"{API}/oidc")
            assert r.status_code == 200, r.text
            status = json_of(r)
            assert isinstance(status, dict)
            assert status["authenticated"] is True
            assert status["device"] is True and status["supports_revocation"] is True
            # userinfo answers {"sub": "alice", "name": "User alice",
            # "preferred_username": "alice"}: no numeric id, no picture, no profile.
            assert status["user"] == {"id": 0, "login": "alice", "avatar_url": "",
                                      "profile_url": "", "name": "User alice"}

            # 6. The link is listed, with its refresh token.
            r = c.get(API)
            assert r.status_code == 200, r.text
            listed = json_of(r)
            assert isinstance(listed, dict)
            [link] = listed["links"]
            assert link["provider_id"] == "oidc"
            assert link["authenticated"] is True
            assert link["has_refresh_token"] is True
            assert link["validate_error"] == ""
            [provider] = listed["providers"]
            assert (provider["id"], provider["type"]) == ("oidc", "oidc")

            # 7. Unlinking revokes the grant at the provider.
            assert oidc.userinfo(access).status_code == 200
            r = c.delete(f"{API}/oidc")
            assert r.status_code == 200, r.text
            assert json_of(r) == {"token_revoked": True}
            gone = oidc.userinfo(access)
            assert gone.status_code == 401, gone.text
            assert gone.json()["error"] == "invalid_token"

            r = c.get(API)
            assert r.status_code == 200 and r.json()["links"] == []
    finally:
        server.stop()


def test_wrong_client_secret_fails_device_start(tmp_path: Path, oidc: OidcProvider) -> None:
    wrong = "not-the-secret-" + oidc.client_secret[::-1]
    server = extauth(tmp_path, oidc, client_secret=wrong)
    try:
        headers = {"Coder-Session-Token": server.token("alice")}
        with httpx.Client(base_url=server.url, headers=headers, timeout=15) as c:
            r = c.get(f"{API}/oidc/device")
        assert r.status_code == 502, r.text
        body = json_of(r)
        assert isinstance(body, dict)
        assert "'oidc'" in body["message"], body
        assert "invalid_client" in body.get("detail", ""), body
        assert wrong not in r.text and oidc.client_secret not in r.text
        assert wrong not in server.output()
    finally:
        server.stop()


# -- the web flow (authorization code with PKCE) -------------------------------------


class WebFlow:
    """A live extauth and an oidc-provider whose client redirects to its callback.

    The provider config is ``OidcProvider.web_provider_config``, whose auth URL
    asks for ``prompt=consent``; ``consent=False`` uses the bare auth URL.
    """

    def __init__(self, tmp_path: Path, consent: bool = True, **overrides: Any) -> None:
        # LiveServer picks its port when it is built: the callback URL is known
        # before anything starts, so the provider can register it.
        self.server = LiveServer(tmp_path, [])
        self.callback = f"{self.server.url}{CALLBACK}"
        self.oidc = OidcProvider(tmp_path, redirect_uris=[self.callback])
        self.consent = consent
        self.overrides = overrides

    def providers(self) -> list[dict[str, Any]]:
        """extauth's provider configs, once the provider runs: ``oidc``, web flow."""
        overrides = dict(self.overrides)
        if not self.consent:
            overrides.setdefault("auth_url", self.oidc.endpoint("authorization_endpoint"))
        return [self.oidc.web_provider_config(**overrides)]

    def __enter__(self) -> WebFlow:
        self.oidc.start()
        try:
            self.server.config.write_text(yaml.safe_dump({"external_auth": self.providers()}))
            self.server.start()
        except BaseException:
            self.oidc.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.server.stop()
        finally:
            self.oidc.stop()

    def diagnostics(self) -> str:
        return f"extauth:\n{self.server.output()}\noidc-provider:\n{self.oidc.output()}"


def browser() -> httpx.Client:
    """The user's browser: one cookie jar for both sites, redirects followed by hand."""
    return httpx.Client(timeout=15, follow_redirects=False,
                        headers={"User-Agent": "extauth-e2e-browser"})


def query(url: str) -> dict[str, str]:
    """A URL's query parameters, each present once."""
    params = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in params.values()), params
    return {k: v[0] for k, v in params.items()}


def without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def pending_verifiers(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT code_verifier FROM oauth_states").fetchall()
    conn.close()
    return [str(r[0]) for r in rows]


def link_count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT count(*) FROM external_auth_links").fetchone()
    conn.close()
    return int(n)


def start_web(flow: WebFlow, b: httpx.Client, token: str) -> str:
    """Sign in through the sign-in form, open the callback as the page's Link
    does; return the provider's authorize URL extauth redirected to (checked)."""
    r = b.post(f"{flow.server.url}/login", data={"token": token, "redirect": CALLBACK})
    assert r.status_code == 303, (r.text, flow.diagnostics())
    assert r.headers["location"] == CALLBACK
    # The form sets an HttpOnly session cookie.
    [cookie] = r.headers.get_list("set-cookie")
    attributes = [a.strip().lower() for a in cookie.split(";")]
    assert attributes[0] == f"coder_session_token={token}".lower(), cookie
    assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
    assert "secure" not in attributes, "the access URL is plain http"
    assert b.cookies.get("coder_session_token") == token
    r = b.get(flow.callback)
    assert r.status_code == 307, (r.text, flow.diagnostics())
    assert "set-cookie" not in r.headers
    return r.headers["location"]


def test_web_flow_links_with_pkce(tmp_path: Path) -> None:
    with WebFlow(tmp_path) as flow, browser() as b:
        oidc, server = flow.oidc, flow.server
        token = server.token("alice")

        # 1. extauth sends the browser to the provider, with state and PKCE S256.
        authorize = start_web(flow, b, token)
        assert without_query(authorize) == oidc.endpoint("authorization_endpoint")
        params = query(authorize)
        state, challenge = params.pop("state"), params.pop("code_challenge")
        assert params == {
            "prompt": "consent",  # from the configured auth_url
            "client_id": oidc.client_id,
            "redirect_uri": flow.callback,
            "response_type": "code",
            "scope": "openid profile offline_access",
            "access_type": "offline",
            "code_challenge_method": "S256",
        }
        assert len(state) >= 32
        # The challenge is S256 of the verifier extauth keeps for the exchange.
        [verifier] = pending_verifiers(server.db)
        assert 43 <= len(verifier) <= 128 and s256(verifier) == challenge

        # 2. The user signs in and consents on the provider's own pages; the
        #    provider sends the browser back to the callback with a code.
        back = oidc.approve_authorization(authorize, login="alice", browser=b)
        assert without_query(back) == flow.callback, back
        answer = query(back)
        assert answer["state"] == state and answer["code"], answer
        assert answer.get("iss") == oidc.issuer  # RFC 9207; extauth ignores it
        assert "error" not in answer

        # 3. Back at the callback, authenticated by the cookie alone: the code is
        #    exchanged (with the verifier) and the link stored.
        assert "coder_session_token" not in back
        r = b.get(back)
        assert r.status_code == 307, (r.text, flow.diagnostics())
        assert r.headers["location"] == "/external-auth/oidc?redirected=true"
        assert "set-cookie" not in r.headers
        assert link_count(server.db) == 1
        assert pending_verifiers(server.db) == [], "the state is used up"

        # 4. Where it redirected: the provider's page, then the link as the API
        #    reports it, validated at the provider's userinfo.
        r = b.get(f"{server.url}{r.headers['location']}")
        assert r.status_code == 200, r.text
        assert "<h1>Authenticated with oidc</h1>" in r.text
        r = b.get(f"{server.url}{API}/oidc")
        assert r.status_code == 200, r.text
        status = json_of(r)
        assert isinstance(status, dict)
        assert status["authenticated"] is True
        assert status["device"] is False
        assert status["user"] == {"id": 0, "login": "alice", "avatar_url": "",
                                  "profile_url": "", "name": "User alice"}

        # 5. The list shows the link, with the refresh token offline_access got.
        r = b.get(f"{server.url}{API}")
        assert r.status_code == 200, r.text
        listed = json_of(r)
        assert isinstance(listed, dict)
        [link] = listed["links"]
        assert link["provider_id"] == "oidc"
        assert link["authenticated"] is True and link["validate_error"] == ""
        assert link["has_refresh_token"] is True
        access, refresh = stored_tokens(server.db)
        assert access and refresh

        # 6. Replaying the provider's answer fails: the state was used.
        r = b.get(back)
        assert r.status_code == 401, r.text
        assert json_of(r) == {
            "message": "State mismatched.",
            "detail": "The state is unknown, used, expired or not yours; start again.",
        }
        assert stored_tokens(server.db) == (access, refresh), "the link is untouched"


def test_web_flow_wrong_pkce_verifier_fails(tmp_path: Path) -> None:
    with WebFlow(tmp_path) as flow, browser() as b:
        oidc, server = flow.oidc, flow.server
        authorize = start_web(flow, b, server.token("alice"))
        back = oidc.approve_authorization(authorize, login="alice", browser=b)
        assert without_query(back) == flow.callback and "code" in query(back), back

        # Between the provider's answer and the callback, the verifier extauth
        # kept is swapped for another well-formed one: the exchange presents it.
        wrong = secrets.token_urlsafe(48)
        with sqlite3.connect(server.db) as conn:
            changed = conn.execute("UPDATE oauth_states SET code_verifier = ?", (wrong,)).rowcount
        conn.close()
        assert changed == 1

        r = b.get(back)
        assert r.status_code == 500, (r.text, flow.diagnostics())
        body = json_of(r)
        assert isinstance(body, dict)
        assert body["message"] == "Internal error exchanging Oauth code."
        assert body["detail"].startswith("invalid_grant"), body
        assert wrong not in r.text and wrong not in server.output()
        assert link_count(server.db) == 0
        r = b.get(f"{server.url}{API}")
        assert r.status_code == 200 and r.json()["links"] == []

        # The state went with the failed attempt: the same answer cannot be retried.
        r = b.get(back)
        assert (r.status_code, r.json()["message"]) == (401, "State mismatched.")
        assert link_count(server.db) == 0


def test_web_flow_without_pkce_is_refused_by_the_provider(tmp_path: Path) -> None:
    """The provider requires PKCE: what makes the successful flow above a proof
    that extauth used it."""
    with WebFlow(tmp_path, pkce_methods="none") as flow, browser() as b:
        authorize = start_web(flow, b, flow.server.token("alice"))
        assert "code_challenge" not in query(authorize)
        back = flow.oidc.approve_authorization(authorize, login="alice", browser=b)
        answer = query(back)
        assert without_query(back) == flow.callback
        assert answer["error"] == "invalid_request" and "code" not in answer, answer
        r = b.get(back)
        assert r.status_code == 400, r.text
        assert json_of(r) == {
            "message": "Encountered error in oidc process: invalid_request",
            "detail": "Authorization Server policy requires PKCE to be used for this request",
        }
        assert link_count(flow.server.db) == 0


def test_web_flow_user_cancels_at_the_provider(tmp_path: Path) -> None:
    with WebFlow(tmp_path) as flow, browser() as b:
        authorize = start_web(flow, b, flow.server.token("alice"))
        back = flow.oidc.approve_authorization(authorize, browser=b, deny=True)
        assert without_query(back) == flow.callback
        assert query(back)["error"] == "access_denied"
        r = b.get(back)
        assert r.status_code == 400, r.text
        assert json_of(r) == {
            "message": "Encountered error in oidc process: access_denied",
            "detail": "End-User aborted interaction",
        }
        assert link_count(flow.server.db) == 0


def test_web_flow_offline_access_needs_prompt_consent(tmp_path: Path) -> None:
    """Why ``web_provider_config`` puts ``prompt=consent`` in the auth URL: without
    it the provider drops ``offline_access`` (OpenID Connect Core 11; extauth's
    ``access_type=offline`` is Google's dialect), so the link has no refresh token."""
    with WebFlow(tmp_path, consent=False) as flow, browser() as b:
        authorize = start_web(flow, b, flow.server.token("alice"))
        assert "prompt" not in query(authorize)
        assert query(authorize)["scope"] == "openid profile offline_access"
        back = flow.oidc.approve_authorization(authorize, login="alice", browser=b)
        r = b.get(back)
        assert (r.status_code, r.headers["location"]) == (
            307, "/external-auth/oidc?redirected=true"), r.text
        [link] = b.get(f"{flow.server.url}{API}").json()["links"]
        assert link["authenticated"] is True
        assert link["has_refresh_token"] is False
