"""``extauth serve`` as users run it: a uvicorn subprocess on 127.0.0.1."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fake_provider import FakeProvider
from tests.live import EXTAUTH, LiveServer, free_port

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
    log = server.output()
    assert "GET /api/v2/external-auth" in log
    assert token[11:] not in log
    assert not [t for t in [*fake.access, *fake.refresh] if t in log]


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


def test_live_demo_walkthrough(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([*EXTAUTH, "serve", "--demo", "--port", str(port),
                             "--db", str(tmp_path / "demo.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        token = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"export TOKEN=(\S+)", line)
            if m:
                token = m.group(1)
            if "Uvicorn running" in line:
                break
        assert token
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers={"Coder-Session-Token": token}, timeout=10) as c:
            providers = c.get(API).json()["providers"]
            assert [p["id"] for p in providers] == ["demo"]
            device = c.get(f"{API}/demo/device").json()
            assert device["verification_uri"] == f"{base}/demo/device"
            page = httpx.get(device["verification_uri"],
                             params={"user_code": device["user_code"]})
            assert page.status_code == 200 and "Approved" in page.text
            r = c.post(f"{API}/demo/device", json={"device_code": device["device_code"]})
            assert r.status_code == 204
            status = c.get(f"{API}/demo").json()
            assert status["authenticated"] is True and status["user"]["login"] == "demo-user"
            assert c.delete(f"{API}/demo").json() == {"token_revoked": True}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_live_config_error_stops_start_up(tmp_path: Path) -> None:
    server = LiveServer(tmp_path, [{"type": "x", "client_id": "c"}])
    with pytest.raises(RuntimeError, match="'token_url' must be provided"):
        server.start()
