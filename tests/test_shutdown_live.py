"""SIGTERM with a refresh in flight: no new connections, the refresh and its
request finish within ``EXTAUTH_SHUTDOWN_SECONDS``, the lease is released and
the process exits 0; a refresh that outlasts the grace period is stopped and
its lease released all the same."""

from __future__ import annotations

import signal
import sqlite3
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from extauth.links import expires_at
from extauth.store import open_store
from tests.fake_provider import FakeProvider
from tests.live import LiveServer

pytestmark = pytest.mark.live
FAKE = "/api/v2/external-auth/fake"


def _expired_link(server: LiveServer, fake: FakeProvider) -> str:
    token = server.token()
    store = open_store(server.db)
    user = store.get_user("alice")
    assert user is not None
    store.upsert_link(user.id, "fake", *fake.issue(), expires_at(-60))
    store.close()
    return token


def _refresh_in_flight(server: LiveServer, fake: FakeProvider, token: str,
                       pool: ThreadPoolExecutor) -> Future[httpx.Response]:
    """A request whose refresh the provider is answering right now."""
    pending = pool.submit(httpx.get, f"{server.url}{FAKE}",
                          headers={"Coder-Session-Token": token}, timeout=60)
    deadline = time.monotonic() + 20
    while fake.refreshes == 0:
        assert time.monotonic() < deadline, "the refresh never reached the provider"
        time.sleep(0.02)
    return pending


def _lease(db: Path) -> tuple[str, str | None]:
    conn = sqlite3.connect(db)
    try:
        owner, until = conn.execute(
            "SELECT lease_owner, lease_until FROM external_auth_links").fetchone()
    finally:
        conn.close()
    return owner, until


def test_sigterm_lets_a_refresh_in_flight_finish_and_exits_0(tmp_path: Path,
                                                            fake: FakeProvider) -> None:
    server = LiveServer(tmp_path, [fake.config()], env={"EXTAUTH_SHUTDOWN_SECONDS": "20"})
    server.start()
    token = _expired_link(server, fake)
    fake.refresh_delay = 1.5
    with ThreadPoolExecutor(1) as pool:
        pending = _refresh_in_flight(server, fake, token, pool)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        # stops accepting at once, while the request is still being answered
        deadline = time.monotonic() + 5
        while True:
            try:
                httpx.get(f"{server.url}/healthz", timeout=1)
            except httpx.TransportError:
                break
            assert time.monotonic() < deadline, "still accepting connections"
            time.sleep(0.05)
        assert not pending.done()
        r = pending.result(timeout=30)
    assert r.status_code == 200 and r.json()["authenticated"] is True
    assert server.proc.wait(timeout=30) == 0
    assert fake.refreshes == 1
    store = open_store(server.db)
    user = store.get_user("alice")
    assert user is not None
    link = store.get_link(user.id, "fake")
    assert link is not None and link.refresh_token in fake.refresh  # the rotated pair
    assert _lease(server.db) == ("", None)
    assert "Finished server process" in server.output()


def test_a_refresh_outlasting_the_grace_period_is_stopped_and_its_lease_released(
        tmp_path: Path, fake: FakeProvider) -> None:
    grace = 1.0
    server = LiveServer(tmp_path, [fake.config()], "--log-format", "json",
                        env={"EXTAUTH_SHUTDOWN_SECONDS": str(grace),
                             "EXTAUTH_PROVIDER_TIMEOUT": "30"})
    server.start()
    token = _expired_link(server, fake)
    fake.refresh_delay = 20
    with ThreadPoolExecutor(1) as pool:
        pending = _refresh_in_flight(server, fake, token, pool)
        assert _lease(server.db)[0] != ""  # held while the provider answers
        assert server.proc is not None
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=15) == 0
        took = time.monotonic() - signalled
        r = pending.result(timeout=10)
    assert r.status_code == 503 and r.headers["content-type"] == "application/json"
    assert r.json()["message"] == "The server is shutting down."
    # the grace period, plus the time to release and exit: well short of the refresh
    assert took < grace + 5, took
    assert _lease(server.db) == ("", None)
    output = server.output()
    assert "stopped 1 refresh(es) still running after the grace period" in output
    # cut off by the grace period: not a bug of ours, no traceback
    assert "Traceback" not in output
