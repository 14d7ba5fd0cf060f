"""``extauth serve --log-format json`` through every flow: each line is a JSON
object, requests carry their fields, and no token, code, verifier, state or
client secret that passed through appears anywhere in the output."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from extauth.links import expires_at
from extauth.store import open_store
from tests.fake_provider import Answer, FakeProvider
from tests.live import LiveServer

pytestmark = pytest.mark.live
API = "/api/v2/external-auth"
FAKE = f"{API}/fake"


def _expire(server: LiveServer, user: str) -> tuple[str, str]:
    """Make ``user``'s stored token expired; return its access and refresh tokens."""
    store = open_store(server.db)
    found = store.get_user(user)
    assert found is not None
    link = store.get_link(found.id, "fake")
    assert link is not None
    store.upsert_link(found.id, "fake", link.access_token, link.refresh_token, expires_at(-60))
    store.close()
    return link.access_token, link.refresh_token


def _device_flow(c: httpx.Client, fake: FakeProvider) -> str:
    code: str = c.get(f"{FAKE}/device").json()["device_code"]
    assert c.post(f"{FAKE}/device", json={"device_code": code}).status_code == 400
    fake.approve(code)
    assert c.post(f"{FAKE}/device", json={"device_code": code}).status_code == 204
    return code


def _web_flow(server: LiveServer, token: str) -> None:
    cookies = {"coder_session_token": token}
    r = httpx.get(f"{server.url}/external-auth/fake/callback", cookies=cookies)
    assert r.status_code == 307, r.text
    approved = httpx.get(r.headers["location"])
    assert approved.status_code == 302
    back = urlsplit(approved.headers["location"])
    r = httpx.get(f"{server.url}{back.path}?{back.query}", cookies=cookies)
    assert r.status_code == 307 and r.headers["location"] == "/external-auth/fake?redirected=true"
    # the same state again: refused
    r = httpx.get(f"{server.url}{back.path}?{back.query}", cookies=cookies)
    assert r.status_code == 401


def _secrets(fake: FakeProvider, tokens: list[str]) -> set[str]:
    """Every secret that passed between the clients, extauth and the provider."""
    found = {fake.CLIENT_SECRET, *fake.access, *fake.refresh, *fake.used_refresh,
             *fake.revoked, *fake.grant_of}
    for token in tokens:
        found |= {token, token.partition("-")[2]}
    for seen in fake.requests:
        for name in ("device_code", "code", "code_verifier", "refresh_token", "token",
                     "client_secret"):
            found.add(seen.form.get(name, ""))
        found.add(seen.query.get("state", ""))
        found.add(seen.headers.get("authorization", "").partition(" ")[2])
        found.add(str((seen.json or {}).get("access_token", "")))
    return {s for s in found if len(s) >= 8}


def test_no_secret_of_any_flow_reaches_the_json_log(tmp_path: Path, fake: FakeProvider) -> None:
    server = LiveServer(tmp_path, [fake.config()], "--log-format", "json", env={
        "EXTAUTH_PROVIDER_TIMEOUT": "1", "EXTAUTH_REFRESH_RETRY_SECONDS": "0",
        "EXTAUTH_REVOKE_RETRY_SECONDS": "0.2"}).start()
    try:
        alice, bob = server.token("alice"), server.token("bob")
        forged = f"{alice[:10]}-{'x' * 22}"
        with httpx.Client(base_url=server.url, headers={"Coder-Session-Token": alice},
                          timeout=10) as c:
            device_code = _device_flow(c, fake)
            assert c.get(FAKE).json()["authenticated"] is True
            _expire(server, "alice")  # a refresh that works
            assert c.get(API).json()["links"][0]["authenticated"] is True
            assert c.delete(FAKE).json() == {"token_revoked": True}
            _web_flow(server, alice)
            # a refresh refused for good, the provider echoing what it was sent
            access_token, refresh_token = _expire(server, "alice")
            fake.script("token", Answer(status=400, json={
                "error": "invalid_grant", "error_description": f"{refresh_token} is revoked"}))
            assert c.get(FAKE).json()["authenticated"] is False
            # a revocation (of the access token: the refresh token is gone) the
            # provider fails, echoing it; then retried
            fake.script("revoke", Answer(status=500, text=f"cannot revoke {access_token}"))
            assert c.delete(FAKE).json()["token_revoked"] is False
            deadline = time.monotonic() + 10
            while len(fake.seen("revoke")) < 3:
                assert time.monotonic() < deadline, "the revocation was not retried"
                time.sleep(0.05)
        with httpx.Client(base_url=server.url, headers={"Coder-Session-Token": bob},
                          timeout=10) as c:
            # someone else's device code, a provider that fails and one that hangs
            r = c.post(f"{FAKE}/device", json={"device_code": device_code})
            assert r.json()["detail"] == "invalid_grant"
            fake.script("device", Answer(status=503, text=f"down {fake.CLIENT_SECRET}"),
                        Answer(delay=3, json={}))
            assert c.get(f"{FAKE}/device").status_code == 502
            assert c.get(f"{FAKE}/device").status_code == 502
        # credentials that fail, in every place they can be sent
        assert httpx.get(f"{server.url}{API}", headers={"Coder-Session-Token": forged}
                         ).status_code == 401
        assert httpx.get(f"{server.url}{API}", headers={"Authorization": f"Bearer {forged}"}
                         ).status_code == 401
        assert httpx.get(f"{server.url}{API}", params={"coder_session_token": forged}
                         ).status_code == 401
        assert httpx.get(f"{server.url}{API}", params={"coder_session_token": bob}
                         ).status_code == 200
    finally:
        server.stop()  # it finishes writing before it exits
    output = server.output()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert lines and all(isinstance(line, dict) for line in lines)
    secrets = _secrets(fake, [alice, bob, forged])
    # two session tokens and a forged one, their secrets, five provider tokens,
    # a device code, an authorization code, its state and verifier, Basic and Bearer
    # credentials, the client secret
    assert len(secrets) >= 18
    leaked = sorted(s for s in secrets if s in output)
    assert not leaked, f"secrets in the log: {leaked}"

    requests = [line for line in lines if line["logger"] == "extauth.access"]
    assert all({"time", "level", "message", "request_id", "operation", "status",
                "duration_ms", "path"} <= set(line) for line in requests)
    polls = [line for line in requests if line["operation"] == "post_external_auth_device_by_id"]
    assert [p["status"] for p in polls] == [400, 204, 400]
    assert all(p["provider"] == "fake" and isinstance(p["user_id"], int) for p in polls)
    assert {line["path"] for line in requests if "coder_session_token" in line["path"]} == {
        f"{API}?coder_session_token=****"}
    callbacks = [line for line in requests if line["operation"] == "external_auth_callback"]
    assert len(callbacks) == 3
    assert all("code=****" in c["path"] and "state=****" in c["path"] for c in callbacks[1:])

    def levels(**match: str) -> list[str]:
        return [line["level"] for line in lines
                if all(line.get(k) == v for k, v in match.items())]

    assert levels(action="refresh", outcome="ok") == ["info"]
    assert levels(action="refresh", outcome="permanent") == ["warning"]
    [permanent] = [line for line in lines if line.get("outcome") == "permanent"]
    assert permanent["message"].startswith("refresh permanent: invalid_grant: ")
    assert levels(action="revoke", outcome="failed") == ["warning"]
    assert "ok" in [line.get("outcome") for line in lines if line.get("action") == "revoke"]
    down = [line for line in lines if line["logger"] == "extauth.providers"]
    assert down and all(d["level"] == "warning" for d in down)
    assert {(d["kind"], d["status_code"]) for d in down} == {("device", 503), ("device", 0),
                                                             ("revoke", 500)}
    assert not [line for line in lines if line["level"] in ("error", "critical")]
