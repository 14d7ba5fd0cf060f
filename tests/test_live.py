"""``extauth serve`` as users run it: a uvicorn subprocess on 127.0.0.1."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.fake_provider import FakeProvider
from tests.live import EXTAUTH, LiveServer, drain_to, free_port, log_text, stop_drained
from tests.oidc_provider import Form, parse_page

pytestmark = pytest.mark.live
API = "/api/v2/external-auth"


@pytest.fixture
def server(tmp_path: Path, fake: FakeProvider) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path, [fake.config()]).start()
    yield s
    s.stop()


def test_live_device_flow_list_get_delete(server: LiveServer, fake: FakeProvider) -> None:
    token = server.token()
    with httpx.Client(base_url=server.url, headers={"Coder-Session-Token": token},
                      timeout=10) as c:
        device = c.get(f"{API}/fake/device").json()
        r = c.post(f"{API}/fake/device", json={"device_code": device["device_code"]})
        assert (r.status_code, r.json()["detail"]) == (400, "authorization_pending")
        fake.approve(device["device_code"])
        assert c.post(f"{API}/fake/device",
                      json={"device_code": device["device_code"]}).status_code == 204
        status = c.get(f"{API}/fake").json()
        assert status["authenticated"] is True and status["user"]["login"] == "octocat"
        [listed] = c.get(API).json()["links"]
        assert listed["provider_id"] == "fake" and listed["authenticated"] is True
        assert c.delete(f"{API}/fake").json() == {"token_revoked": True}
        assert c.get(API).json()["links"] == []
        # the query-parameter form must not leave the token in the access log
        assert c.get(API, params={"coder_session_token": token},
                     headers={"Coder-Session-Token": ""}).status_code in (200, 401)
        assert c.get(API, params={"access_token": token},
                     headers={"Coder-Session-Token": ""}).status_code == 200
    log = server.output()
    assert "GET /api/v2/external-auth" in log
    assert token[11:] not in log
    assert not [t for t in [*fake.access, *fake.refresh] if t in log]


def test_the_access_log_masks_a_token_under_a_percent_encoded_name(server: LiveServer) -> None:
    """The server decodes the name, so it authenticates: the log must not show it."""
    token = server.token()
    r = httpx.get(f"{server.url}{API}?coder%5Fsession%5Ftoken={token}&x=1", timeout=10)
    assert r.status_code == 200
    assert r.json()["providers"][0]["id"] == "fake"
    log = server.output()
    assert "GET /api/v2/external-auth?coder%5Fsession%5Ftoken=****&x=1" in log
    assert token[11:] not in log


def test_live_two_workers_share_one_database(tmp_path: Path, fake: FakeProvider) -> None:
    server = LiveServer(tmp_path, [fake.config()], "--workers", "2").start()
    try:
        tokens = [server.token(f"user{i}") for i in range(8)]

        def link(token: str) -> int:
            with httpx.Client(base_url=server.url, timeout=10,
                              headers={"Coder-Session-Token": token}) as c:
                code = c.get(f"{API}/fake/device").json()["device_code"]
                fake.approve(code)
                return c.post(f"{API}/fake/device", json={"device_code": code}).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(link, tokens)) == [204] * 8
        for token in tokens:
            r = httpx.get(f"{server.url}{API}", headers={"Coder-Session-Token": token})
            assert [x["provider_id"] for x in r.json()["links"]] == ["fake"]
        assert "Started parent process" in server.output()
        pids = set(re.findall(r"Started server process \[(\d+)\]", server.output()))
        assert len(pids) == 2
    finally:
        server.stop()


def test_live_demo_walkthrough(demo: DemoServer) -> None:
    base = demo.url
    # The way in for a person: the sign-in page, with the token printed above it.
    assert f"open {base}/login, paste the token above" in demo.output()
    with httpx.Client(base_url=base, headers={"Coder-Session-Token": demo.token},
                      timeout=10) as c:
        providers = c.get(API).json()["providers"]
        assert [p["id"] for p in providers] == ["demo"]
        device = c.get(f"{API}/demo/device").json()
        assert device["verification_uri"] == f"{base}/demo/device"
        page = httpx.get(device["verification_uri"], params={"user_code": device["user_code"]})
        assert page.status_code == 200 and "<h1>Approved</h1>" in page.text
        # The demo provider's pages have extauth's look, under the same policy.
        assert '<link rel="stylesheet" href="/assets/style.css">' in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        r = c.post(f"{API}/demo/device", json={"device_code": device["device_code"]})
        assert r.status_code == 204
        status = c.get(f"{API}/demo").json()
        assert status["authenticated"] is True and status["user"]["login"] == "demo-user"
        assert c.delete(f"{API}/demo").json() == {"token_revoked": True}


def test_live_config_error_stops_start_up(tmp_path: Path) -> None:
    server = LiveServer(tmp_path, [{"type": "x", "token_url": "https://x/t"}])
    with pytest.raises(RuntimeError, match="'client_id' must be provided"):
        server.start()


def test_live_a_coder_deployments_environment_starts_extauth(
    tmp_path: Path, fake: FakeProvider
) -> None:
    """Coder's variables as a deployment has them, with keys of newer Coder
    releases and a provider that cannot work: extauth starts (two workers),
    lists the same providers, warns once per ignored key, and serves the rest."""
    corp = {f"CODER_EXTERNAL_AUTH_2_{k.upper()}": str(v) for k, v in fake.config(
        id="Corp", type="Keycloak", scopes="repo read:user", device_flow="1",
        no_refresh="False").items()}
    env = {
        "CODER_EXTERNAL_AUTH_0_TYPE": "github", "CODER_EXTERNAL_AUTH_0_CLIENT_ID": "gh-client",
        "CODER_EXTERNAL_AUTH_0_CLIENT_SECRET": "gh-secret",
        "CODER_EXTERNAL_AUTH_0_MCP_URL": "https://api.githubcopilot.com/mcp/",
        "CODER_EXTERNAL_AUTH_0_MCP_TOOL_DENY_REGEX": "^delete_",
        "CODER_EXTERNAL_AUTH_1_TYPE": "bitbucket-server",
        "CODER_EXTERNAL_AUTH_1_CLIENT_ID": "bb-client",
        **corp,
    }
    server = LiveServer(tmp_path, [], "--workers", "2", env=env).start()
    try:
        token = server.token()
        with httpx.Client(base_url=server.url, headers={"Coder-Session-Token": token},
                          timeout=10) as c:
            providers = {p["id"]: p for p in c.get(API).json()["providers"]}
            assert list(providers) == ["github", "bitbucket-server", "Corp"]
            assert providers["bitbucket-server"]["unusable"].startswith(
                "it has no token URL: set CODER_EXTERNAL_AUTH_1_AUTH_URL")
            assert "unusable" not in providers["github"] and "unusable" not in providers["Corp"]
            r = c.get(f"{API}/bitbucket-server")
            assert r.status_code == 503
            assert r.json()["message"] == (
                "Provider 'bitbucket-server' cannot be used as configured.")
            assert c.get(f"{API}/corp").status_code == 404  # ids keep their case
            device = c.get(f"{API}/Corp/device").json()
            fake.approve(device["device_code"])
            assert c.post(f"{API}/Corp/device",
                          json={"device_code": device["device_code"]}).status_code == 204
            assert c.get(f"{API}/Corp").json()["authenticated"] is True
    finally:
        server.stop()
    log = server.output()
    for key in ("CODER_EXTERNAL_AUTH_0_MCP_URL", "CODER_EXTERNAL_AUTH_0_MCP_TOOL_DENY_REGEX"):
        assert log.count(f"WARNING:  {key} (provider 'github')") == 1, log
    assert log.count("WARNING:  provider 'bitbucket-server' is unusable") == 1
    assert "gh-secret" not in log


# -- serve --demo: the web flow on the demo provider's consent page ------------------


class DemoServer:
    """``extauth serve --demo`` on a free port; ``token`` is the session token it prints.

    Its output is read up to uvicorn's start line (at most ``timeout`` seconds),
    then copied to ``log`` by a thread, so that the pipe never fills up.
    """

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "demo.db"
        self.log = tmp / f"demo-{self.port}.log"
        self.token = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._drain: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> DemoServer:
        self.proc = subprocess.Popen(
            [*EXTAUTH, "serve", "--demo", "--port", str(self.port), "--db", str(self.db)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "EXTAUTH_VALIDATE_RESPONSES": "true"},
        )
        assert self.proc.stdout is not None
        out = self.proc.stdout
        seen = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(out, selectors.EVENT_READ)
            while b"Uvicorn running" not in seen:
                remaining = deadline - time.monotonic()
                chunk = os.read(out.fileno(), 4096) if remaining > 0 and sel.select(
                    remaining) else b""
                if not chunk:
                    self.stop()
                    raise RuntimeError(f"serve --demo did not start within {timeout}s:\n"
                                       f"{seen.decode(errors='replace')}")
                seen += chunk
        self.log.write_bytes(seen)
        m = re.search(r"export TOKEN=(\S+)", seen.decode(errors="replace"))
        assert m, seen
        self.token = m.group(1)
        self._drain = drain_to(out, self.log)
        return self

    def output(self) -> str:
        return log_text(self.log)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_drained(proc, self._drain)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoServer]:
    server = DemoServer(tmp_path).start()
    yield server
    server.stop()


def consent_form(r: httpx.Response) -> Form:
    """The demo provider's consent page: one form, Approve and Deny buttons."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    page = parse_page(r.text)
    assert page.title.startswith("Authorize extauth"), page.title
    [form] = page.forms
    assert form.method == "post"
    assert form.buttons == [("decision", "approve"), ("decision", "deny")]
    return form


def open_consent_page(demo: DemoServer, b: httpx.Client) -> httpx.Response:
    """Sign in through the form, open the callback; follow extauth's redirect to
    the demo provider's consent page and return that page."""
    callback = f"{demo.url}/external-auth/demo/callback"
    r = b.post(f"{demo.url}/login", data={"token": demo.token, "redirect": callback})
    assert r.status_code == 303, (r.text, demo.output())
    assert "httponly" in r.headers["set-cookie"].lower()
    assert b.cookies.get("coder_session_token") == demo.token
    # The absolute URL was reduced to its path: the sign-in page never leaves the site.
    assert r.headers["location"] == "/external-auth/demo/callback"
    r = b.get(callback)
    assert r.status_code == 307, (r.text, demo.output())
    authorize = urlsplit(r.headers["location"])
    assert f"{authorize.scheme}://{authorize.netloc}{authorize.path}" == (
        f"{demo.url}/demo/oauth/authorize")
    params = {k: v[0] for k, v in parse_qs(authorize.query).items()}
    assert params["redirect_uri"] == callback and params["code_challenge_method"] == "S256"
    page = b.get(r.headers["location"])
    # The form's hidden inputs carry the authorization request on.
    assert consent_form(page).fields == params
    return page


def test_live_demo_web_flow_approve(demo: DemoServer) -> None:
    api = f"{demo.url}{API}"
    # The browser: no session header anywhere, only what the cookie jar keeps.
    with httpx.Client(timeout=10, follow_redirects=False) as b:
        assert b.get(f"{api}/demo").status_code == 401
        page = open_consent_page(demo, b)
        action, data = consent_form(page).submit(str(page.url), "approve")
        r = b.post(action, data=data)
        assert r.status_code == 303, r.text
        back = r.headers["location"]
        assert back.startswith(f"{demo.url}/external-auth/demo/callback?")
        answer = parse_qs(urlsplit(back).query)
        assert set(answer) == {"state", "code"}
        r = b.get(back)
        assert r.status_code == 307, (r.text, demo.output())
        assert r.headers["location"] == "/external-auth/demo?redirected=true"
        r = b.get(f"{demo.url}{r.headers['location']}")
        assert r.status_code == 200, r.text
        assert "<h1>Authenticated with Demo provider" in r.text
        r = b.get(f"{demo.url}{API}/demo")
        assert r.status_code == 200, r.text
        status = r.json()
        assert status["authenticated"] is True
        assert status["user"]["login"] == "demo-user"
        [link] = b.get(api).json()["links"]
        assert link["provider_id"] == "demo" and link["has_refresh_token"] is True
        # The provider's answer is good once.
        r = b.get(back)
        assert (r.status_code, r.json()["message"]) == (401, "State mismatched.")
    # The walkthrough prints the token; the access log must not.
    access_log = [line for line in demo.output().splitlines() if "/external-auth/" in line]
    assert any("GET /external-auth/demo/callback" in line for line in access_log), access_log
    assert not [line for line in access_log if demo.token[11:] in line]


def test_live_demo_web_flow_deny(demo: DemoServer) -> None:
    with httpx.Client(timeout=10, follow_redirects=False) as b:
        page = open_consent_page(demo, b)
        action, data = consent_form(page).submit(str(page.url), "deny")
        r = b.post(action, data=data)
        assert r.status_code == 303, r.text
        back = r.headers["location"]
        assert back.startswith(f"{demo.url}/external-auth/demo/callback?")
        assert parse_qs(urlsplit(back).query)["error"] == ["access_denied"]
        r = b.get(back)
        assert r.status_code == 400, r.text
        assert r.json() == {"message": "Encountered error in oidc process: access_denied",
                            "detail": "The user denied access."}
        assert b.get(f"{demo.url}{API}").json()["links"] == []
        assert b.get(f"{demo.url}{API}/demo").json()["authenticated"] is False
