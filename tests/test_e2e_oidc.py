"""extauth end to end against panva's oidc-provider 8.8.1 (Node.js) on 127.0.0.1.

extauth runs as users run it (``extauth serve`` in a subprocess, see
``tests/live.py``); the provider is a real OpenID Provider with the RFC 8628
device flow, client_secret_basic, userinfo and RFC 7009 revocation
(``tests/oidc/server.mjs``). The user approves the device on the provider's own
pages (``OidcProvider.approve_device``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import LiveServer
from tests.oidc_provider import OidcProvider

pytestmark = pytest.mark.e2e
API = "/api/v2/external-auth"
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
